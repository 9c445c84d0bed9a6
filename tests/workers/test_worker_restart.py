"""A worker killed during training, then restarted: the loop still trains once, registers one
version. Real worker processes (`retrain worker`) on the dev server; the training runs in its own
process group, so it outlives the killed worker and the retried activity reuses its result."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
from temporalio.testing import WorkflowEnvironment

from activities import default_training
from activities.local.registry import MlflowRegistry
from activities.local.training import LocalTrainingBackend, RunnerState, process_start
from activities.loop.audit import AuditStore
from tests.support.helpers import eventually
from tests.support.loop_harness import register, start_loop, with_changes, write_dataset
from workflows.loop.models import LoopStatus, TrainingOutput, TrainingRequest

# `retrain` is the console script (starters.cli:main); `python -m starters.cli` would not run it.
RETRAIN = Path(sys.executable).parent / "retrain"
REPO = Path(__file__).resolve().parents[2]
# Longer than the retry takes to arrive (TRAINING_HEARTBEAT 30 s + backoff): the second worker
# finds the first attempt's training process still running and adopts it.
SLEEP_SECONDS = 45
TEST_KEYS = ("calls_file", "sleep")


def slow_default_training(request: TrainingRequest) -> TrainingOutput:
    """The default trainer, slowed down and counting its calls (runs in the training runner)."""
    params = request.hyperparameters
    with Path(str(params["calls_file"])).open("a") as handle:
        handle.write(f"{request.loop_id}\n")
    print("slow default training: sleeping", flush=True)
    time.sleep(float(params["sleep"]))
    rest = {key: value for key, value in params.items() if key not in TEST_KEYS}
    return default_training.train(request.model_copy(update={"hyperparameters": rest}))


class WorkerProcess:
    """`retrain worker` as a separate OS process, its output in a log file."""

    def __init__(self, address: str, task_queue: str, home: Path, log: Path) -> None:
        self.log_path = log
        self._log: IO[bytes] = log.open("ab")
        env = {
            **os.environ,
            "RETRAIN_HOME": str(home),
            # The training runner imports the entrypoint from this test module.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        self.process = subprocess.Popen(
            [str(RETRAIN), "--address", address, "worker", "--task-queue", task_queue],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _calls(calls_file: Path) -> list[str]:
    return calls_file.read_text().splitlines() if calls_file.exists() else []


def _kill_leftover_runner(training_dir: Path) -> None:
    """A failed test must not leave the training runner behind (its own process group)."""
    state_file = training_dir / "state.json"
    if not state_file.exists():
        return
    state = RunnerState.model_validate_json(state_file.read_text())
    if process_start(state.pid) == state.process_start:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(state.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.dev_server_only
async def test_killed_worker_restarted_during_training_registers_one_version(
    env: WorkflowEnvironment, home: Path, model: str, task_queue: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    today = (await env.get_current_time()).date()
    calls_file = tmp_path / "training-calls.txt"
    changes = {
        "loop": {"approval": {"first_deployment": False}},
        "training": {
            "entrypoint": "tests.workers.test_worker_restart:slow_default_training",
            "hyperparameters": {"calls_file": str(calls_file), "sleep": SLEEP_SECONDS},
        },
    }
    register(home, with_changes(write_dataset(home, model, today), changes))
    address = env.client.service_client.config.target_host
    workers: list[WorkerProcess] = []

    def new_worker() -> WorkerProcess:
        log = tmp_path / f"worker-{len(workers) + 1}.log"
        workers.append(WorkerProcess(address, task_queue, home, log))
        return workers[-1]

    handle = None
    try:
        first = new_worker()
        handle = await start_loop(env.client, task_queue, model)

        async def training_started() -> bool:
            if first.process.poll() is not None:
                raise RuntimeError(f"the first worker exited early:\n{first.output()}")
            return len(_calls(calls_file)) == 1

        await eventually(training_started, timeout=120, what="the training to start")
        first.kill()
        second = new_worker()
        try:
            result = await asyncio.wait_for(handle.result(), timeout=180)
        except TimeoutError:
            raise AssertionError(
                f"the loop did not finish after the restart; second worker:\n{second.output()}"
            ) from None
    finally:
        for worker in workers:
            worker.kill()
        if handle is not None:
            _kill_leftover_runner(LocalTrainingBackend(home).training_dir(model, handle.id))

    assert result.status is LoopStatus.PROMOTED, result.summary
    assert _calls(calls_file) == [handle.id], "trained more than once"
    versions = MlflowRegistry(home).versions(model)
    assert [v.version for v in versions] == ["1"]
    audit = AuditStore(home).read(model, handle.id)
    assert audit is not None and audit.training is not None
    assert audit.training.reused, "the retried activity should reuse the surviving training"
    # Full collections must not walk the start-up heap inside an activation (workers/worker.py).
    assert "startup objects frozen out of garbage collection" in second.log_path.read_text()
    print(f"worker restart test took {time.monotonic() - started:.1f}s")
