"""CPU per one-row prediction in the endpoint's model call (serving/variants.py): OpenMP's
default team (one thread per core) against the one thread the endpoint now uses, on the demo's
model (the default training pipeline: one-hot + scaling + HistGradientBoosting).

Both run in fresh threads, in alternating rounds in one process, so the machine's noise hits
both alike; the figure is the process's CPU time per call (the OpenMP team's spinning
included), median over rounds.

    .venv/bin/python -m bench.serving_threads
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from activities.default_training import build_pipeline
from serving.variants import Variant, one_row_frame
from starters.demo.synthetic import CATEGORICAL, FEATURES, LABEL, generate_rows
from workflows.loop.models import ModelVersion, TrainingRequest
from workflows.spec.models import Task

ROUNDS = 7
CALLS = 200


def measure(call: Callable[[], Any]) -> tuple[float, float]:
    """(process CPU ms, wall ms) per call, measured in a fresh thread."""
    result: list[tuple[float, float]] = []

    def body() -> None:
        call()  # the thread's first call sets it up (and loads nothing later)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(CALLS):
            call()
        result.append(
            ((time.process_time() - cpu) / CALLS * 1e3, (time.perf_counter() - wall) / CALLS * 1e3)
        )

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return result[0]


def main() -> None:
    table = generate_rows(date(2026, 1, 1), 5000, function=0, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        request = TrainingRequest(
            model="bench",
            loop_id="bench",
            task="classification",
            train_path=str(Path(tmp) / "unused"),
            validation_path=str(Path(tmp) / "unused"),
            features=list(FEATURES),
            categorical_features=list(CATEGORICAL),
            label=LABEL,
            output_dir=tmp,
        )
        pipeline = build_pipeline(request)
    frame = table.to_pandas()
    pipeline.fit(frame[list(FEATURES)], frame[LABEL])
    schema = table.select(list(FEATURES)).schema
    row = table.select(list(FEATURES)).slice(0, 1).to_pylist()[0]
    variant = Variant(
        ModelVersion(model="bench", version="1", source="-"), pipeline, Task.CLASSIFICATION
    )
    team: list[tuple[float, float]] = []
    one: list[tuple[float, float]] = []
    for _ in range(ROUNDS):
        team.append(measure(lambda: pipeline.predict_proba(one_row_frame(row, schema))))
        one.append(measure(lambda: variant.predict(one_row_frame(row, schema))))
    team_cpu, one_cpu = (statistics.median(c for c, _ in runs) for runs in (team, one))
    team_wall, one_wall = (statistics.median(w for _, w in runs) for runs in (team, one))
    print(f"one-row prediction, median of {ROUNDS} rounds x {CALLS} calls")
    print(f"  OpenMP default team: {team_cpu:6.2f} ms CPU, {team_wall:6.2f} ms wall")
    print(f"  one OpenMP thread:   {one_cpu:6.2f} ms CPU, {one_wall:6.2f} ms wall")
    print(f"  CPU ratio {team_cpu / one_cpu:.2f}x, wall ratio {team_wall / one_wall:.2f}x")


if __name__ == "__main__":
    main()
