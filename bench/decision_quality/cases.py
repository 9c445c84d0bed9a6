"""Building the cases (error matrix + cost-independent schedules), cached on disk.

A case's file is keyed by everything that shapes it (the stream and its seed or file digest,
batches, batch size, window, the model, `CASE_FORMAT`), so every policy and retraining cost
reuses one matrix, and a second run of the grid only replays the policies.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.decision_quality.baselines import (
    default_spec_schedule,
    detector_schedule,
    detectors,
    psi_schedule,
)
from bench.decision_quality.matrix import WINDOW, Case, Models, make_model
from bench.decision_quality.streams import Stream, synthetic

# Bump when what a case holds, or how it is computed, changes.
CASE_FORMAT = 1


def build_case(stream: Stream, seed: int | None, window: int = WINDOW) -> Case:
    models = Models(stream, window)
    errors = models.matrix()
    schedules = {name: detector_schedule(models, make) for name, make in detectors().items()}
    schedules["psi"] = psi_schedule(models)
    schedules["default_spec"], tally = default_spec_schedule(models)
    counts = [s.stop - s.start for s in models.slices]
    return Case(
        stream=stream.name,
        seed=seed,
        window=window,
        counts=counts,
        errors=errors,
        schedules=schedules,
        notes={"default_spec_decisions": tally},
        changes=stream.changes,
        description=stream.description,
    )


def case_key(parts: dict[str, Any]) -> str:
    shape = {**parts, "format": CASE_FORMAT, "model": repr(make_model())}
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_or_build(path: Path, build: Callable[[], Case]) -> Case:
    if path.exists():
        try:
            return Case.from_json(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError):
            pass  # an unreadable cache file (an older format, a torn write): rebuild it
    case = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".case-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(case.to_json(), handle, separators=(",", ":"))
    os.replace(tmp, path)
    return case


def _synthetic_case(job: tuple[str, int, int, int, Path]) -> Case:
    name, seed, batches, batch_size, cache = job
    key = case_key(
        {
            "stream": name,
            "seed": seed,
            "batches": batches,
            "batch_size": batch_size,
            "window": WINDOW,
        }
    )
    return load_or_build(
        cache / f"{name}-{seed}-{key}.json",
        lambda: build_case(synthetic(name, seed, batches, batch_size), seed),
    )


def synthetic_cases(
    names: Iterable[str],
    seeds: Iterable[int],
    *,
    batches: int,
    batch_size: int,
    cache: Path,
    jobs: int,
) -> list[Case]:
    work = [(name, seed, batches, batch_size, cache) for name in names for seed in seeds]
    if jobs <= 1:
        return [_synthetic_case(job) for job in work]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_synthetic_case, work))
