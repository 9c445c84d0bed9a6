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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

BATCH_SIZE = 500
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


class StreamError(ValueError):
    """A stream the benchmark cannot use; the message says why."""


@dataclass(frozen=True)
class Stream:
    name: str
    features: npt.NDArray[np.float64]  # rows x columns; categorical columns hold codes
    labels: npt.NDArray[np.int64]
    batch_of: npt.NDArray[np.int64]  # per row: its batch, non-decreasing from 0
    feature_names: list[str]
    categorical: list[str]  # names of the columns holding category codes
    batch_end: list[datetime]  # per batch: when it ends (decisions are taken then)
    description: str
    changes: list[int] = field(default_factory=list)  # batches where a concept change starts

    @property
    def batches(self) -> int:
        return int(self.batch_of[-1]) + 1

    def batch_slices(self) -> list[slice]:
        bounds = np.searchsorted(self.batch_of, np.arange(self.batches + 1), side="left")
        return [slice(int(bounds[b]), int(bounds[b + 1])) for b in range(self.batches)]


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


def _batches_by_rows(rows: int, batch_size: int) -> npt.NDArray[np.int64]:
    batch_of = np.arange(rows, dtype=np.int64) // batch_size
    # A short tail joins the batch before it rather than being a batch of its own.
    if rows % batch_size and rows > batch_size:
        batch_of[batch_of == batch_of[-1]] -= 1
    return batch_of


def load_parquet(
    path: Path,
    label: str,
    time: str,
    *,
    batch_size: int | None = None,
    period: str | None = None,
    features: list[str] | None = None,
) -> Stream:
    """A labelled stream from a Parquet file: rows sorted by `time`, every other column (or
    `features`) a feature. Text, categorical and boolean columns become category codes in order
    of first appearance (no look-ahead); rows without a label or a timestamp are refused.
    Batches: `period` (a pandas frequency such as "1D") or `batch_size` rows (default 500)."""
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]
    import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as error:
        raise StreamError(f"cannot read {path}: {error}") from error
    # A stored pandas index comes back as the frame's index, not as a feature.
    frame = table.to_pandas().reset_index(drop=True)
    columns = [str(c) for c in frame.columns]
    for role, column in (("label", label), ("time", time)):
        if column not in columns:
            raise StreamError(
                f"{path}: no {role} column {column!r} (columns: {', '.join(columns[:20])})"
            )
    if frame[label].isna().all():
        raise StreamError(f"{path}: the label column {label!r} holds no labels")
    if frame[label].isna().any():
        raise StreamError(
            f"{path}: {int(frame[label].isna().sum())} rows have no label in {label!r}; "
            "the benchmark needs every served row labelled (drop them first)"
        )
    stamps = frame[time]
    if not pd.api.types.is_datetime64_any_dtype(stamps):
        try:
            stamps = pd.to_datetime(stamps, utc=True, format="mixed")
        except (ValueError, TypeError) as error:
            raise StreamError(f"{path}: column {time!r} is not a timestamp: {error}") from None
    if stamps.isna().any():
        raise StreamError(f"{path}: {int(stamps.isna().sum())} rows have no timestamp in {time!r}")
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize("UTC")
    frame = frame.assign(**{time: stamps}).sort_values(time, kind="stable", ignore_index=True)

    names = features or [c for c in columns if c not in (label, time)]
    unknown = [n for n in names if n not in columns]
    if unknown:
        raise StreamError(f"{path}: no feature column(s) {', '.join(unknown)}")
    if not names:
        raise StreamError(f"{path}: no feature columns besides {label!r} and {time!r}")
    matrix = np.empty((len(frame), len(names)), dtype=np.float64)
    categorical: list[str] = []
    for j, name in enumerate(names):
        column = frame[name]
        if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
            codes, _ = pd.factorize(column.astype("object"), sort=False, use_na_sentinel=True)
            matrix[:, j] = codes
            categorical.append(name)
        else:
            matrix[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
    labels, classes = pd.factorize(frame[label], sort=True)
    if len(classes) < 2:
        raise StreamError(f"{path}: the label {label!r} has a single class ({classes[0]!r})")

    times = frame[time]
    if period is not None:
        try:
            keys = times.dt.floor(period)
        except ValueError as error:
            raise StreamError(f"bad --period {period!r}: {error}") from None
        batch_of = pd.factorize(keys, sort=True)[0].astype(np.int64)
    else:
        batch_of = _batches_by_rows(len(frame), batch_size or BATCH_SIZE)
    ends = times.groupby(batch_of).max()
    return Stream(
        name=path.stem,
        features=matrix,
        labels=labels.astype(np.int64),
        batch_of=batch_of,
        feature_names=list(names),
        categorical=categorical,
        batch_end=[t.to_pydatetime() for t in ends],
        description=f"{path.name}: {len(frame)} rows, {len(names)} features, "
        f"{len(classes)} classes, {int(batch_of[-1]) + 1} batches",
    )


def iter_batches(stream: Stream) -> Iterator[tuple[int, slice]]:
    yield from enumerate(stream.batch_slices())
