"""The local backend's `TrainingBackend` (activities/ports.py): a training process per loop.

`LocalTrainingBackend` runs the user's `module:function` entrypoint (SageMaker script mode, typed)
in a separate OS process (`activities.training_runner`), in its own process group, and keeps
everything for one loop under `<home>/runs/<model>/<loop_id>/training/`:

    job.json      the job as started (a retry with a different job is refused)
    state.json    the runner's pid, its start time (so a recycled pid is never mistaken for it),
                  the wall-clock start and how many runners were started
    training.log  the runner's stdout and stderr; its last line is the heartbeat's progress
    output/       the entrypoint's output dir (request.output_dir is pinned here)
    result.json   the TrainingResult, or error.json with the entrypoint's traceback
    lock          held while an attempt decides whether to reuse, adopt or start

Idempotent by loop id: a finished training is returned again (reused=True); a runner still
alive from an attempt whose worker died is adopted and waited for (reused=True); a new runner
starts only when neither exists. So a retried activity never trains twice.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from temporalio.exceptions import ApplicationError, CancelledError

from activities.training_runner import ERROR_FILE, RESULT_FILE, TrainingFailure, write_atomically
from workflows.common.errors import ErrorType
from workflows.common.models import StrictModel
from workflows.common.names import validate_model_name
from workflows.loop.models import TrainingJob, TrainingResult

# Loop ids become directory names.
_LOOP_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,199}$")
_TRACEBACK_LINES = 12
# The numeric libraries' thread pools (OpenMP, OpenBLAS, MKL) each size themselves to every core
# of the host. Runners beside each other and the worker would oversubscribe the cores, and
# OpenMP's idle threads spin while they wait for one (a 6,000-row gradient-boosting training on
# a busy two-core host: about 7 CPU-s with a thread per core, 3 with one). So each runner gets an
# equal share of the cores among this worker's running runners when it starts; limits set in
# the worker's environment win.
THREAD_LIMITS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_runners: set[subprocess.Popen[bytes]] = set()
_runners_lock = threading.Lock()


class RunnerState(StrictModel):
    pid: int
    # The process's start time as the OS reports it: the pid's identity.
    process_start: str
    started_at: float
    starts: int


class LocalTrainingBackend:
    def __init__(self, home: Path, poll_seconds: float = 0.5) -> None:
        self.home = home
        self.poll_seconds = poll_seconds

    def training_dir(self, model: str, loop_id: str) -> Path:
        return self.home / "runs" / model / loop_id / "training"

    def train(self, job: TrainingJob, heartbeat: Callable[[str], None]) -> TrainingResult:
        directory = self.training_dir(*checked_names(job))
        job = job.model_copy(
            update={
                "request": job.request.model_copy(update={"output_dir": str(directory / "output")})
            }
        )
        directory.mkdir(parents=True, exist_ok=True)
        # Check-and-start under a file lock: two attempts racing on one host start one runner.
        with _locked(directory / "lock"):
            _refuse_different_job(directory, job)
            state = _read_state(directory)
            # Liveness before results: a runner exits only after writing its result file.
            alive = state is not None and process_start(state.pid) == state.process_start
            if not alive and _finished(directory):
                return _outcome(directory, job, reused=True, returncode=None)
            if alive and state is not None:
                child, reused = None, True
            else:
                child, state = _start(directory, job, state)
                reused = False
        returncode = self._wait(directory, job, state, child, heartbeat)
        return _outcome(directory, job, reused=reused, returncode=returncode)

    def _wait(
        self,
        directory: Path,
        job: TrainingJob,
        state: RunnerState,
        child: subprocess.Popen[bytes] | None,
        heartbeat: Callable[[str], None],
    ) -> int | None:
        """Wait for the runner (ours, or adopted); its exit status when it was ours."""
        deadline = state.started_at + job.timeout_seconds
        try:
            while _running(state, child):
                if time.time() > deadline:
                    _kill(state, child)
                    raise ApplicationError(
                        f"training {job.request.loop_id} exceeded its timeout of "
                        f"{job.timeout_seconds:g}s and was killed",
                        type=ErrorType.TRAINING_TIMEOUT,
                        non_retryable=True,
                    )
                heartbeat(_progress(directory, state))
                time.sleep(self.poll_seconds)
        except (CancelledError, KeyboardInterrupt):
            # Cancelled (or interrupted): leave no training running behind.
            _kill(state, child)
            raise
        return None if child is None else child.wait()


def checked_names(job: TrainingJob) -> tuple[str, str]:
    """The job's model and loop id, refused (non-retryable) unless safe as names and paths."""
    model, loop_id = job.request.model, job.request.loop_id
    try:
        validate_model_name(model)
    except ValueError as exc:
        raise ApplicationError(
            str(exc), type=ErrorType.INVALID_TRAINING_JOB, non_retryable=True
        ) from exc
    if not _LOOP_ID.fullmatch(loop_id):
        raise ApplicationError(
            f"invalid loop id {loop_id!r}", type=ErrorType.INVALID_TRAINING_JOB, non_retryable=True
        )
    return model, loop_id


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _refuse_different_job(directory: Path, job: TrainingJob) -> None:
    job_file = directory / "job.json"
    if job_file.exists() and TrainingJob.model_validate_json(job_file.read_text()) != job:
        raise ApplicationError(
            f"loop {job.request.loop_id} already trained with a different job ({job_file})",
            type=ErrorType.TRAINING_JOB_CONFLICT,
            non_retryable=True,
        )


def _finished(directory: Path) -> bool:
    return (directory / RESULT_FILE).exists() or (directory / ERROR_FILE).exists()


def _read_state(directory: Path) -> RunnerState | None:
    path = directory / "state.json"
    return RunnerState.model_validate_json(path.read_text()) if path.exists() else None


def _start(
    directory: Path, job: TrainingJob, previous: RunnerState | None
) -> tuple[subprocess.Popen[bytes], RunnerState]:
    # Whatever a crashed runner left in the output dir is not this training's.
    output = Path(job.request.output_dir)
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    job_file = directory / "job.json"
    write_atomically(job_file, job.model_dump_json(indent=2))
    with _runners_lock:
        _runners.difference_update([c for c in _runners if c.poll() is not None])
        share = thread_share(usable_cpus(), running=len(_runners))
        env = runner_environment(os.environ, share)
        # The runner imports what the worker can: the same sys.path (test modules, user code).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        with (directory / "training.log").open("ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-u", "-m", "activities.training_runner", str(job_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        _runners.add(child)
    state = RunnerState(
        pid=child.pid,
        process_start=process_start(child.pid) or "",
        started_at=time.time(),
        starts=(previous.starts if previous else 0) + 1,
    )
    write_atomically(directory / "state.json", state.model_dump_json(indent=2))
    return child, state


def usable_cpus() -> int:
    """The cores this process may run on (its affinity where the OS has one, as on Linux)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_share(cpus: int, running: int) -> int:
    """A new runner's threads: an equal share of the cores with the runners already running."""
    return max(1, cpus // (running + 1))


def runner_environment(environ: Mapping[str, str], threads: int) -> dict[str, str]:
    """The worker's environment, with `threads` for each thread pool it does not limit itself."""
    return {**{name: str(threads) for name in THREAD_LIMITS}, **environ}


def _running(state: RunnerState, child: subprocess.Popen[bytes] | None) -> bool:
    if child is not None:
        return child.poll() is None
    return process_start(state.pid) == state.process_start


def _kill(state: RunnerState, child: subprocess.Popen[bytes] | None) -> None:
    """Kill the runner's process group (its pid leads it), only while that pid is still it."""
    if not _running(state, child):
        return
    try:
        os.killpg(state.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if child is not None:
        child.wait()
        return
    while process_start(state.pid) == state.process_start:
        time.sleep(0.05)


def process_start(pid: int) -> str | None:
    """The start time of a live (non-zombie) process, or None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        return _process_start_from_ps(pid)
    # Fields after the parenthesised command name: state is the 1st, starttime the 20th.
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _process_start_from_ps(pid: int) -> str | None:
    """Where there is no /proc (macOS): ask ps."""
    found = subprocess.run(
        ["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not found or found.startswith("Z"):
        return None
    return found.split(maxsplit=1)[1]


def _progress(directory: Path, state: RunnerState) -> str:
    elapsed = time.time() - state.started_at
    return f"training (pid {state.pid}, {elapsed:.0f}s): {_log_tail(directory, 1)}"[:500]


def _log_tail(directory: Path, lines: int) -> str:
    log = directory / "training.log"
    if not log.exists():
        return ""
    with log.open("rb") as handle:
        handle.seek(max(0, log.stat().st_size - 8192))
        text = handle.read().decode(errors="replace")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def _outcome(
    directory: Path, job: TrainingJob, *, reused: bool, returncode: int | None
) -> TrainingResult:
    if (directory / RESULT_FILE).exists():
        result = TrainingResult.model_validate_json((directory / RESULT_FILE).read_text())
        return result.model_copy(update={"reused": reused})
    if (directory / ERROR_FILE).exists():
        failure = TrainingFailure.model_validate_json((directory / ERROR_FILE).read_text())
        last_lines = "\n".join(failure.traceback.rstrip().splitlines()[-_TRACEBACK_LINES:])
        raise ApplicationError(
            f"training entrypoint {failure.entrypoint} failed: {failure.error}\n{last_lines}",
            type=ErrorType.TRAINING_ENTRYPOINT,
            non_retryable=True,
        )
    how = (
        "with an unknown status (adopted after a worker restart)"
        if returncode is None
        else f"killed by signal {-returncode}"
        if returncode < 0
        else f"with status {returncode}"
    )
    raise ApplicationError(
        f"training process for {job.request.loop_id} ended {how} without a result; "
        f"log tail:\n{_log_tail(directory, _TRACEBACK_LINES)}",
        type=ErrorType.TRAINING_CRASHED,
    )
