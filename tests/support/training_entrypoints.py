"""Training entrypoints for the training tests (run inside `activities.training_runner`).

Hyperparameters steer them: `calls_file` gets one line per call (how many trainings ran),
`sleep` is how long `slow` takes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from workflows.loop.models import TrainingOutput, TrainingRequest


def _record_call(request: TrainingRequest) -> None:
    calls_file = request.hyperparameters.get("calls_file")
    if isinstance(calls_file, str):
        with Path(calls_file).open("a") as handle:
            handle.write(f"{request.loop_id}\n")


def slow(request: TrainingRequest) -> TrainingOutput:
    _record_call(request)
    print("slow training started", flush=True)
    time.sleep(float(request.hyperparameters.get("sleep", 2.0)))
    artifact = Path(request.output_dir) / "model.txt"
    artifact.write_text("a model")
    print("slow training done", flush=True)
    return TrainingOutput(artifact_path=artifact.name, metrics={"accuracy": 0.5})


def failing(request: TrainingRequest) -> TrainingOutput:
    _record_call(request)
    raise ValueError(f"label column {request.label!r} is all null in this window")


def thread_limits(request: TrainingRequest) -> TrainingOutput:
    """Reports the thread-pool limits its process was started with, as metrics."""
    artifact = Path(request.output_dir) / "model.txt"
    artifact.write_text("a model")
    limits = {name: float(os.environ.get(name, "0")) for name in THREAD_VARIABLES}
    return TrainingOutput(artifact_path=artifact.name, metrics=limits)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def no_artifact(request: TrainingRequest) -> TrainingOutput:
    return TrainingOutput(artifact_path="missing.joblib")


not_callable = 42
