"""The training subprocess: `python -m activities.training_runner <job.json>`.

Started by `LocalTrainingBackend` in its own process group, so a worker that dies leaves the
training running for the next attempt to adopt. It imports the job's `module:function`, calls it
with the TrainingRequest, checks what it returns, and writes next to the job file either
`result.json` (a TrainingResult) or `error.json` (the error and its traceback, exit status 1).
Both are written atomically: a reader sees a whole file or none.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from activities.files import plain_permissions
from workflows.common.models import StrictModel
from workflows.loop.models import TrainingJob, TrainingOutput, TrainingResult

RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
BACKEND = "local"


class TrainingFailure(StrictModel):
    """What `error.json` holds when the entrypoint could not be imported, raised, or misbehaved."""

    entrypoint: str
    error: str
    traceback: str


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m activities.training_runner <job.json>", file=sys.stderr)
        return 2
    job_path = Path(argv[0])
    job = TrainingJob.model_validate_json(job_path.read_text())
    started = time.monotonic()
    try:
        entrypoint = resolve_entrypoint(job.entrypoint)
        output = checked_output(entrypoint(job.request), Path(job.request.output_dir))
    # SystemExit too: an entrypoint calling sys.exit() has failed, not crashed.
    except (Exception, SystemExit) as exc:
        failure = TrainingFailure(
            entrypoint=job.entrypoint,
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(),
        )
        write_atomically(job_path.parent / ERROR_FILE, failure.model_dump_json(indent=2))
        print(failure.traceback, file=sys.stderr, flush=True)
        return 1
    result = TrainingResult(
        artifact_path=output.artifact_path,
        artifact_sha256=sha256_file(Path(output.artifact_path)),
        metrics=output.metrics,
        duration_seconds=time.monotonic() - started,
        backend=BACKEND,
    )
    write_atomically(job_path.parent / RESULT_FILE, result.model_dump_json(indent=2))
    return 0


def resolve_entrypoint(entrypoint: str) -> Callable[..., Any]:
    module_name, _, function_name = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import training module {module_name!r}: {exc}") from exc
    function = getattr(module, function_name, None)
    if function is None:
        raise AttributeError(f"training module {module_name!r} has no {function_name!r}")
    if not callable(function):
        raise TypeError(f"training entrypoint {entrypoint!r} is not callable")
    return function  # type: ignore[no-any-return]


def checked_output(returned: object, output_dir: Path) -> TrainingOutput:
    """Accept a TrainingOutput or its dict form; the artifact must exist (relative: output dir)."""
    if not isinstance(returned, TrainingOutput | dict):
        raise TypeError(
            f"the entrypoint returned {type(returned).__name__}; expected TrainingOutput"
        )
    output = TrainingOutput.model_validate(returned)
    artifact = (output_dir / output.artifact_path).resolve()
    if not artifact.is_file():
        raise FileNotFoundError(f"the entrypoint's artifact {artifact} does not exist")
    return output.model_copy(update={"artifact_path": str(artifact)})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(target: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    plain_permissions(fd)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
