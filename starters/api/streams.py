"""Labelled streams from Parquet files: what `retrain simulate` replays and the decision-quality
benchmark (`bench/decision_quality`) scores policies on.

A `Stream` is a feature matrix in time order (categorical columns as integer codes, -1 =
missing), integer class labels, and the batch (decision period) each row belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

BATCH_SIZE = 500


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


def batches_by_rows(rows: int, batch_size: int) -> npt.NDArray[np.int64]:
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
        batch_of = batches_by_rows(len(frame), batch_size or BATCH_SIZE)
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
