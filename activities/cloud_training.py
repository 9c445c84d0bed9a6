"""What the cloud training backends share: waiting for a job, and reading back what it wrote.

`poll` reads a job until it has ended, heartbeating its progress, each wait 1.5 times the last
(up to a ceiling); a cancelled activity cancels the job. `fetch_model_dir` downloads a training's
model directory (what `activities.container_entry --model-dir` writes: `result.json` and the
artifact) and checks the artifact against its sha256.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from temporalio.exceptions import ApplicationError, CancelledError

from activities.ports import ObjectStore
from activities.training_runner import RESULT_FILE, sha256_file
from workflows.common.errors import ErrorType
from workflows.loop.models import TrainingJob, TrainingResult

T = TypeVar("T")


def poll(
    read: Callable[[], T],
    done: Callable[[T], bool],
    progress: Callable[[T], str],
    heartbeat: Callable[[str], None],
    *,
    poll_seconds: float,
    max_poll_seconds: float,
    cancel: Callable[[], None],
) -> T:
    """`read()` until `done`, heartbeating `progress` between reads; `cancel()` the job when
    the activity is cancelled while it waits (the cancellation is raised on)."""
    delay = poll_seconds
    try:
        while True:
            found = read()
            if done(found):
                return found
            heartbeat(progress(found))
            time.sleep(delay)
            delay = min(delay * 1.5, max_poll_seconds)
    except CancelledError:
        cancel()
        raise


def fetch_model_dir(
    store: ObjectStore,
    job: TrainingJob,
    model_uri: str,
    output: Path,
    backend: str,
    reused: bool,
) -> TrainingResult:
    """The training's result from the model directory at `model_uri`, downloaded to `output`."""
    found = store.list(f"{model_uri}/")
    if not any(item.uri == f"{model_uri}/{RESULT_FILE}" for item in found):
        raise ApplicationError(
            f"training {job.request.loop_id} succeeded without {model_uri}/{RESULT_FILE}",
            type=ErrorType.TRAINING_OUTPUT_MISMATCH,
            non_retryable=True,
        )
    for item in found:
        store.download(item.uri, output / item.uri.removeprefix(f"{model_uri}/"))
    result = TrainingResult.model_validate_json((output / RESULT_FILE).read_text())
    artifact = (output / result.artifact_path).resolve()
    if not artifact.is_relative_to(output.resolve()) or not artifact.is_file():
        raise ApplicationError(
            f"the training's artifact {result.artifact_path} is not in {model_uri}",
            type=ErrorType.TRAINING_OUTPUT_MISMATCH,
            non_retryable=True,
        )
    if sha256_file(artifact) != result.artifact_sha256:
        raise ApplicationError(
            f"{model_uri}/{result.artifact_path} does not match its sha256 in {RESULT_FILE}",
            type=ErrorType.TRAINING_OUTPUT_MISMATCH,
            non_retryable=True,
        )
    return result.model_copy(
        update={"artifact_path": str(artifact), "backend": backend, "reused": reused}
    )
