"""How right each model version was on live traffic: its captured answers joined with their
feedback labels (the performance monitor's reader, `activities.drift.performance_window`), the
accuracy of its last `rows` labelled answers with a Wilson interval."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from activities.drift.performance_metrics import wilson_interval
from activities.drift.performance_window import read_labelled_window
from activities.local.capture import capture_dir
from workflows.spec.models import ModelSpec


@dataclass(frozen=True)
class LiveAccuracy:
    version: str
    rows: int
    accuracy: float
    ci_low: float
    ci_high: float
    # Request times of the first and last of those rows.
    first_at: datetime | None
    last_at: datetime | None


def live_accuracy(
    home: Path, spec: ModelSpec, since: datetime, rows: int, confidence: float = 0.95
) -> dict[str, LiveAccuracy]:
    """Per version that answered labelled live requests since `since`: the accuracy of its last
    `rows` of them (fewer when it answered fewer)."""
    window = read_labelled_window(
        capture_dir(home, spec), spec.task, since, datetime.now(UTC), max_rows=2_000_000
    )
    found: dict[str, LiveAccuracy] = {}
    for version in sorted(set(window.version.tolist())):
        mine = np.flatnonzero(window.version == version)[-rows:]
        if not mine.size:
            continue
        correct = int((window.prediction[mine] == window.label[mine]).sum())
        low, high = wilson_interval(correct, int(mine.size), confidence)
        times = window.times()
        found[str(version)] = LiveAccuracy(
            version=str(version),
            rows=int(mine.size),
            accuracy=correct / mine.size,
            ci_low=low,
            ci_high=high,
            first_at=times[mine[0]],
            last_at=times[mine[-1]],
        )
    return found
