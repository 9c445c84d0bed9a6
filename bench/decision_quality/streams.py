"""The benchmark's streams: river's synthetic generators (seeded) and external Parquet files.

Every stream becomes a `Stream`: a feature matrix in time order (categorical columns as integer
codes, -1 = missing), integer class labels, and the batch each row belongs to. The synthetic
ones have `BATCHES` batches of `BATCH_SIZE` rows; each batch is one day of traffic (so the
default spec's daily limits and cooldowns mean what they mean in production).

Drifting streams (river's `synth.ConceptDriftStream` chains the concepts):

- `sea_abrupt` / `sea_gradual`: SEA (10% label noise), three changes of threshold at random
  batches (at least `MIN_SPACING` apart), each to a different variant; abrupt = a transition of
  a fraction of a batch, gradual = `GRADUAL_WIDTH` batches.
- `agrawal_abrupt` / `agrawal_gradual`: Agrawal's classification functions (5% feature
  perturbation), three changes of function, the same way.
- `hyperplane`: a rotating hyperplane (10 features, 2 drifting, 5% label noise): slow
  continuous drift.
- `rbf_drift`: RandomRBFDrift (50 centroids, all moving): continuous drift.

The stationary control, `stationary`: SEA variant 0 with 10% label noise, no change at all.
"""

from __future__ import annotations

import itertools
import math
import random
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from starters.api.streams import BATCH_SIZE, Stream, StreamError, load_parquet

__all__ = ["BATCH_SIZE", "Stream", "StreamError", "load_parquet"]

BATCHES = 100
CHANGES = 3
MIN_SPACING = 15  # batches between two concept changes (and from either end of the stream)
GRADUAL_WIDTH = 5  # batches over which a gradual change completes
SEA_NOISE = 0.1
AGRAWAL_PERTURBATION = 0.05
HYPERPLANE_MAG_CHANGE = 0.005
RBF_CHANGE_SPEED = 0.0001
SYNTHETIC_START = datetime(2024, 1, 1, tzinfo=UTC)

AGRAWAL_FEATURES = [
    "salary",
    "commission",
    "age",
    "elevel",
    "car",
    "zipcode",
    "hvalue",
    "hyears",
    "loan",
]
AGRAWAL_CATEGORICAL = ["elevel", "car", "zipcode"]


# ------------------------------------------------------------------------------ synthetic


def _seed(name: str, seed: int) -> int:
    """A per-(stream, seed) integer: streams with the same seed are still independent."""
    return zlib.crc32(f"{name}:{seed}".encode())


def _change_batches(rng: random.Random, batches: int, changes: int) -> list[int]:
    # Short streams (the quick mode) space their changes closer.
    spacing = max(2, min(MIN_SPACING, batches // (changes + 2)))
    low, high = spacing, batches - spacing
    for _ in range(10_000):
        picked = sorted(rng.sample(range(low, high), changes))
        gaps = [b - a for a, b in itertools.pairwise(picked)]
        if all(gap >= spacing for gap in gaps):
            return picked
    raise StreamError(f"cannot place {changes} changes {spacing} batches apart in {batches}")


def _concepts(rng: random.Random, choices: int, count: int) -> list[int]:
    """`count` concepts, each different from the one before."""
    picked = [rng.randrange(choices)]
    while len(picked) < count:
        candidate = rng.randrange(choices)
        if candidate != picked[-1]:
            picked.append(candidate)
    return picked


def _chain(
    make: Callable[[int, int], Any],
    concepts: list[int],
    positions: list[int],
    width: int,
    seed: int,
) -> Any:
    """River's ConceptDriftStream, nested: concept k takes over at row `positions[k-1]`.

    A nested stream only advances when it is drawn from, so each position is relative to the
    start of the transition before it. River's logistic transition overflows `math.exp` when
    (position / width) is large; an "abrupt" width is kept just above that limit (a few dozen
    rows for changes tens of thousands of rows in: still well inside one batch).
    """
    from river.datasets import synth

    stream = make(concepts[-1], seed + len(concepts))
    for k in range(len(concepts) - 1, 0, -1):
        start = positions[k - 1] - (positions[k - 2] if k >= 2 else 0)
        step_width = max(width, math.ceil(4 * start / 700))
        stream = synth.ConceptDriftStream(
            stream=make(concepts[k - 1], seed + k),
            drift_stream=stream,
            position=start,
            width=step_width,
            seed=seed + 100 + k,
        )
    return stream


def _rows(source: Iterable[tuple[dict[Any, Any], Any]], count: int, names: list[Any]) -> Any:
    xs = np.empty((count, len(names)), dtype=np.float64)
    ys = np.empty(count, dtype=np.int64)
    for row, (x, y) in enumerate(itertools.islice(source, count)):
        xs[row] = [x[name] for name in names]
        ys[row] = int(y)
    return xs, ys


def synthetic(name: str, seed: int, batches: int = BATCHES, batch_size: int = BATCH_SIZE) -> Stream:
    """One of `SYNTHETIC`'s streams for `seed` (deterministic)."""
    from river.datasets import synth

    if name not in SYNTHETIC:
        raise StreamError(f"unknown stream {name!r}; known: {', '.join(SYNTHETIC)}")
    base = _seed(name, seed)
    rng = random.Random(base)
    rows = batches * batch_size
    changes: list[int] = []
    categorical: list[str] = []
    kind, _, style = name.partition("_")
    if kind in ("sea", "agrawal") and style in ("abrupt", "gradual"):
        changes = _change_batches(rng, batches, CHANGES)
        width = GRADUAL_WIDTH * batch_size if style == "gradual" else 1
        if kind == "sea":
            concepts = _concepts(rng, 4, CHANGES + 1)
            names: list[Any] = [0, 1, 2]

            def make(concept: int, s: int) -> Any:
                return synth.SEA(variant=concept, noise=SEA_NOISE, seed=s)

            what = f"SEA variants {concepts}"
        else:
            concepts = _concepts(rng, 10, CHANGES + 1)
            names = list(AGRAWAL_FEATURES)
            categorical = list(AGRAWAL_CATEGORICAL)

            def make(concept: int, s: int) -> Any:
                return synth.Agrawal(
                    classification_function=concept, perturbation=AGRAWAL_PERTURBATION, seed=s
                )

            what = f"Agrawal functions {concepts}"
        # Gradual changes are centred on their batch; abrupt ones start at its first row.
        offset = width // 2 if style == "gradual" else 0
        positions = [b * batch_size + offset for b in changes]
        source = _chain(make, concepts, positions, width, base % 1_000_000)
        description = f"{what}, {style} changes at batches {changes}"
    elif name == "hyperplane":
        names = list(range(10))
        source = synth.Hyperplane(
            seed=base % 1_000_000,
            n_features=10,
            n_drift_features=2,
            mag_change=HYPERPLANE_MAG_CHANGE,
            noise_percentage=0.05,
        )
        description = f"rotating hyperplane, mag_change {HYPERPLANE_MAG_CHANGE}"
    elif name == "rbf_drift":
        names = list(range(10))
        source = synth.RandomRBFDrift(
            seed_model=base % 1_000_000,
            seed_sample=base % 1_000_000 + 1,
            n_centroids=50,
            change_speed=RBF_CHANGE_SPEED,
            n_drift_centroids=50,
        )
        description = f"RandomRBFDrift, 50 moving centroids, speed {RBF_CHANGE_SPEED}"
    else:  # stationary
        names = [0, 1, 2]
        source = synth.SEA(variant=0, noise=SEA_NOISE, seed=base % 1_000_000)
        description = "SEA variant 0, no change"
    xs, ys = _rows(source, rows, names)
    return Stream(
        name=name,
        features=xs,
        labels=ys,
        batch_of=np.repeat(np.arange(batches, dtype=np.int64), batch_size),
        feature_names=[str(n) if isinstance(n, str) else f"x{n}" for n in names],
        categorical=categorical,
        batch_end=[SYNTHETIC_START + timedelta(days=b + 1) for b in range(batches)],
        description=description,
        changes=changes,
    )


SYNTHETIC = (
    "sea_abrupt",
    "sea_gradual",
    "agrawal_abrupt",
    "agrawal_gradual",
    "hyperplane",
    "rbf_drift",
    "stationary",
)
STATIONARY = ("stationary",)


# ------------------------------------------------------------------------------ external


def iter_batches(stream: Stream) -> Iterator[tuple[int, slice]]:
    yield from enumerate(stream.batch_slices())
