"""One variant's window of captured traffic, as numpy arrays for the canary statistics.

`read_window` reads the endpoint's capture (layout in `activities.local.capture`): the request
partitions dated on or after the window's `since` (UTC), the rows one variant answered under one
generation (live or shadow), and the latest label per request id from the feedback partitions
dated on or after the same day (labels arrive after their requests). Only the needed columns
are read, the row filter is pushed down to the Parquet scan, and the join is vectorised.

A file that cannot be read as a capture file (corrupt, a missing or mistyped column, a null
where the layout forbids one) raises `InvalidCaptureData`; the activity turns it into a
non-retryable error. A window without any rows is a valid empty sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.dataset as ds  # type: ignore[import-untyped, unused-ignore]

from activities.local.capture import (
    CAPTURED_AT,
    FEEDBACK,
    FEEDBACK_SCHEMA,
    GENERATION,
    LABEL,
    LATENCY_MS,
    META_FIELDS,
    PREDICTION,
    RECEIVED_AT,
    REQUEST_ID,
    REQUESTS,
    SCORE,
    SHADOW,
    STATUS_CODE,
    VARIANT,
    partitions_since,
)
from workflows.rollout.models import WindowRef

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

# A status at or above it is a failed call (the endpoint's or the model's fault).
SERVER_ERROR = 500

_META = {field.name: field for field in META_FIELDS}
_REQUEST_COLUMNS = (
    REQUEST_ID,
    VARIANT,
    GENERATION,
    SHADOW,
    STATUS_CODE,
    LATENCY_MS,
    PREDICTION,
    SCORE,
)
# Typed as the layout says: a file storing a column with a compatible type (int32 generation)
# is cast on read, an incompatible one is refused.
_REQUEST_SCHEMA = pa.schema([_META[name] for name in _REQUEST_COLUMNS])
# Columns the layout declares non-nullable: a null there means the file is not ours.
_REQUIRED_REQUEST_COLUMNS = tuple(name for name in _REQUEST_COLUMNS if not _META[name].nullable)


class InvalidCaptureData(ValueError):
    """A capture file that cannot be read as the layout describes."""


# eq=False: comparing numpy arrays with == gives arrays, not a truth value.
@dataclass(frozen=True, eq=False)
class VariantSample:
    """One variant's answers in a window, one position per answer (all arrays equally long).

    `ok`: the call succeeded (status < 500); `latency_ms`: the endpoint's latency;
    `prediction`: the model's answer (NaN when the call failed); `score`: the positive-class
    probability (NaN when absent); `label`: the latest ground truth (NaN when none arrived yet).
    """

    ok: BoolArray
    latency_ms: FloatArray
    prediction: FloatArray
    score: FloatArray
    label: FloatArray

    def __post_init__(self) -> None:
        # Normalise dtypes once so the statistics never meet object or integer arrays.
        for field in fields(self):
            dtype = np.bool_ if field.name == "ok" else np.float64
            array: npt.NDArray[Any] = np.asarray(getattr(self, field.name), dtype=dtype)
            if array.ndim != 1:
                raise ValueError(f"{field.name} must be one-dimensional, not {array.shape}")
            object.__setattr__(self, field.name, array)
        lengths = {field.name: len(getattr(self, field.name)) for field in fields(self)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"the sample's arrays differ in length: {lengths}")

    @property
    def size(self) -> int:
        return len(self.ok)

    @classmethod
    def empty(cls) -> VariantSample:
        nothing = np.empty(0, dtype=np.float64)
        return cls(np.empty(0, dtype=np.bool_), nothing, nothing, nothing, nothing)


def sample_from_arrays(
    ok: Sequence[bool] | npt.ArrayLike,
    latency_ms: Sequence[float] | npt.ArrayLike,
    *,
    prediction: npt.ArrayLike | None = None,
    score: npt.ArrayLike | None = None,
    label: npt.ArrayLike | None = None,
) -> VariantSample:
    """A sample from plain sequences; absent columns are all NaN (no scores, no labels)."""
    ok_array = np.asarray(ok, dtype=np.bool_)

    def column(values: npt.ArrayLike | None) -> FloatArray:
        if values is None:
            return np.full(len(ok_array), np.nan)
        return np.asarray(values, dtype=np.float64)

    return VariantSample(
        ok=ok_array,
        latency_ms=column(latency_ms),
        prediction=column(prediction),
        score=column(score),
        label=column(label),
    )


def read_window(capture_dir: Path, ref: WindowRef, *, by_time: bool = False) -> VariantSample:
    """The answers `ref.variant` gave under `ref.generation` (live, or shadow when
    `ref.shadow`), each with the latest label its request received. `by_time`: the answers
    captured since `ref.since` instead, whatever their generation (a cloud endpoint's capture
    carries none).

    Raises `InvalidCaptureData` when a capture file cannot be read as the layout describes;
    OSError (a file vanishing under the reader) propagates as it is: retrying may help.
    """
    # Partitions are named by UTC day; an aware `since` in another zone is converted first.
    since = ref.since.astimezone(UTC)
    requests = _read_requests(partitions_since(capture_dir, REQUESTS, since), ref, by_time)
    if requests.num_rows == 0:
        return VariantSample.empty()
    request_ids = requests.column(REQUEST_ID)
    labels = _latest_labels(partitions_since(capture_dir, FEEDBACK, since), request_ids)
    # Position of each request's label among the labelled ids; null (no label yet) -> NaN.
    positions = pc.index_in(request_ids, value_set=labels.column(REQUEST_ID))
    label = pc.take(labels.column(f"{LABEL}_last"), positions)
    return VariantSample(
        ok=_numpy(pc.less(requests.column(STATUS_CODE), SERVER_ERROR), np.bool_),
        latency_ms=_numpy(requests.column(LATENCY_MS), np.float64),
        prediction=_numpy(pc.fill_null(requests.column(PREDICTION), np.nan), np.float64),
        score=_numpy(pc.fill_null(requests.column(SCORE), np.nan), np.float64),
        label=_numpy(pc.fill_null(label, np.nan), np.float64),
    )


def _numpy(column: Any, dtype: type[Any]) -> npt.NDArray[Any]:
    return np.asarray(column.to_numpy(), dtype=dtype)


def _read_requests(files: list[Path], ref: WindowRef, by_time: bool) -> pa.Table:
    if not files:
        return _REQUEST_SCHEMA.empty_table()
    schema = _REQUEST_SCHEMA
    condition = (ds.field(VARIANT) == ref.variant) & (ds.field(SHADOW) == ref.shadow)
    if by_time:
        where = f"the request capture of {ref.variant} since {ref.since.isoformat()}"
        schema = schema.append(_META[CAPTURED_AT])
        since = pa.scalar(ref.since.astimezone(UTC), _META[CAPTURED_AT].type)
        condition &= ds.field(CAPTURED_AT) >= since
    else:
        where = f"the request capture of {ref.variant} (generation {ref.generation})"
        condition &= ds.field(GENERATION) == ref.generation
    table = _scan(files, schema, condition, where)
    for name in _REQUIRED_REQUEST_COLUMNS:
        if nulls := table.column(name).null_count:
            raise InvalidCaptureData(f"{where}: {nulls} row(s) have no {name}")
    return table


def _latest_labels(files: list[Path], request_ids: Any) -> pa.Table:
    """One row per labelled request of the window: its id and `label_last`, the label with the
    latest `received_at` (on a tie, the one read last: files are in name, i.e. time, order)."""
    empty = pa.table(
        {REQUEST_ID: pa.array([], pa.string()), f"{LABEL}_last": pa.array([], pa.float64())}
    )
    if not files:
        return empty
    wanted = ds.field(REQUEST_ID).isin(pc.unique(request_ids))
    feedback = _scan(files, FEEDBACK_SCHEMA, wanted, "the feedback capture")
    for name in FEEDBACK_SCHEMA.names:
        if nulls := feedback.column(name).null_count:
            raise InvalidCaptureData(f"the feedback capture: {nulls} row(s) have no {name}")
    if feedback.num_rows == 0:
        return empty
    # A stable sort by arrival, then the last label per id in that order.
    ordered = feedback.take(pc.sort_indices(feedback, sort_keys=[(RECEIVED_AT, "ascending")]))
    latest = ordered.group_by(REQUEST_ID, use_threads=False).aggregate([(LABEL, "last")])
    return latest.select([REQUEST_ID, f"{LABEL}_last"])


def _scan(files: list[Path], schema: pa.Schema, condition: Any, where: str) -> pa.Table:
    try:
        dataset = ds.dataset([str(file) for file in files], format="parquet", schema=schema)
        for fragment in dataset.get_fragments():
            # Given a schema, the scan would fill a missing column with nulls: refuse instead.
            if missing := [n for n in schema.names if n not in fragment.physical_schema.names]:
                raise InvalidCaptureData(
                    f"{where}: {fragment.path} lacks the column(s) {', '.join(missing)}"
                )
        return dataset.to_table(columns=schema.names, filter=condition)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        raise InvalidCaptureData(f"cannot read {where}: {error}") from error
