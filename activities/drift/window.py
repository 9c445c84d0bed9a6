"""The current window of production data for a drift check, read from the endpoint's capture.

Rows: the answers captured between the window's start and end (`captured_at`), each request
once (shadow copies are the same request again). Features are typed like the reference profile:
numbers as float64 with NaN for missing, categories as text. Predictions: the rows the profile's
champion answered successfully, from the column the profile compares (`score` or
`prediction`). Labels: the feedback received in the window (the latest label per request).

The capture's schema is checked file by file against the profile, so a problem is named per
column instead of failing the check: a feature absent from captured files, a feature whose type
changed (strings where numbers were), an unreadable file. New columns are listed as notes.

Before a check reads the capture, it is brought up to date: the local endpoint's buffer flushed
(`flush_notes`), a cloud endpoint's capture synced (`sync_notes`); both say how in notes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from activities.drift.profile import (
    FloatArray,
    ObjectArray,
    ProfileManifest,
    as_float,
    as_text,
    compatible,
    label_values,
)
from activities.local.capture import (
    CAPTURED_AT,
    FEEDBACK,
    LABEL,
    META_COLUMNS,
    RECEIVED_AT,
    REQUEST_ID,
    REQUESTS,
    SHADOW,
    STATUS_CODE,
    VERSION,
    partitions_since,
)
from activities.ports import CaptureSource
from workflows.drift.models import ColumnKind
from workflows.spec.models import ModelSpec

SERVER_ERROR = 500


def flush_notes(flush: Callable[[str], None] | None, endpoint: str) -> list[str]:
    """The local endpoint's capture buffer flushed; a note when it could not be."""
    if flush is not None:
        try:
            flush(endpoint)
        except Exception as error:  # an idle or stopped endpoint: its files are still there
            return [f"endpoint {endpoint} did not flush its capture ({error})"]
    return []


def sync_notes(
    capture: CaptureSource | None,
    spec: ModelSpec,
    start: datetime,
    end: datetime,
    heartbeat: Callable[[str], None],
) -> list[str]:
    """A cloud endpoint's capture and ground truth of [start, end) synced into the capture
    layout; notes say what was read."""
    if capture is None:
        return []
    synced = capture.sync(spec, start, end, heartbeat)
    return [
        f"{capture.name}: {synced.answers} answer(s) and {synced.labels} label(s) read "
        f"from {synced.sources_read} new source(s)",
        *synced.notes,
    ]


@dataclass
class CurrentWindow:
    rows: int
    numeric: dict[str, FloatArray]
    categorical: dict[str, ObjectArray]
    predictions: FloatArray | ObjectArray | None
    labels: FloatArray | ObjectArray | None
    # Per feature: what is wrong with it in the captured files.
    issues: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    files: int = 0


def _in_window(table: pa.Table, column: str, start: datetime, end: datetime) -> pa.Table:
    stamps = table.column(column)
    keep = pc.and_(
        pc.greater_equal(stamps, pa.scalar(start, stamps.type)),
        pc.less(stamps, pa.scalar(end, stamps.type)),
    )
    return table.filter(keep)


def read_current_window(
    root: Path, manifest: ProfileManifest, start: datetime, end: datetime
) -> CurrentWindow:
    profiled = {column.name: column for column in manifest.features}
    absent_in: dict[str, int] = defaultdict(int)
    changed_in: dict[str, set[str]] = defaultdict(set)
    numeric_parts: dict[str, list[FloatArray]] = {
        c.name: [] for c in manifest.features if c.kind is ColumnKind.NUMERIC
    }
    categorical_parts: dict[str, list[ObjectArray]] = {
        c.name: [] for c in manifest.features if c.kind is ColumnKind.CATEGORICAL
    }
    prediction_parts: list[Any] = []
    new_columns: set[str] = set()
    unreadable: list[str] = []
    rows = 0
    files = partitions_since(root, REQUESTS, start)
    for file in files:
        try:
            schema = pq.read_schema(file)
            if CAPTURED_AT not in schema.names:
                raise ValueError(f"no {CAPTURED_AT} column")
            wanted = [n for n in (*profiled, CAPTURED_AT, SHADOW, VERSION, STATUS_CODE)]
            if manifest.prediction_column:
                wanted.append(manifest.prediction_column)
            table = pq.read_table(file, columns=[n for n in wanted if n in schema.names])
            table = _in_window(table, CAPTURED_AT, start, end)
        except (OSError, ValueError, pa.ArrowException) as error:
            unreadable.append(f"{file.name}: {error}")
            continue
        new_columns.update(set(schema.names) - META_COLUMNS - set(profiled))
        if table.num_rows == 0:
            continue
        if SHADOW in table.column_names:
            table = table.filter(pc.invert(pc.fill_null(table.column(SHADOW), False)))
        n = table.num_rows
        rows += n
        for name, column in profiled.items():
            arrow_type = schema.field(name).type if name in schema.names else None
            if arrow_type is None:
                absent_in[name] += 1
            elif not compatible(column.arrow_type, arrow_type, column.kind):
                changed_in[name].add(str(arrow_type))
                arrow_type = None
            if column.kind is ColumnKind.NUMERIC:
                numeric_parts[name].append(
                    as_float(table.column(name)) if arrow_type else np.full(n, np.nan)
                )
            else:
                categorical_parts[name].append(
                    as_text(table.column(name)) if arrow_type else np.full(n, None, object)
                )
        prediction_parts.append(_champion_outputs(table, manifest))

    issues: dict[str, list[str]] = defaultdict(list)
    for name in manifest.missing_features:
        issues[name].append(f"not in the reference profile (built from {manifest.source})")
    for name, count in absent_in.items():
        issues[name].append(f"missing from {count} of the window's capture file(s)")
    for name, types in changed_in.items():
        captured = ", ".join(sorted(types))
        issues[name].append(
            f"type changed: reference {profiled[name].arrow_type}, captured {captured}"
        )
    notes = [f"unreadable capture file {u}" for u in unreadable[:20]]
    if new_columns:
        notes.append(f"columns not in the reference: {', '.join(sorted(new_columns)[:20])}")
    return CurrentWindow(
        rows=rows,
        numeric={k: _concat(v, np.float64) for k, v in numeric_parts.items()},
        categorical={k: _concat(v, object) for k, v in categorical_parts.items()},
        predictions=_predictions(prediction_parts, manifest),
        labels=read_labels(root, manifest, start, end),
        issues=dict(issues),
        notes=notes,
        files=len(files),
    )


def _concat(parts: list[Any], dtype: Any) -> Any:
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)


def _champion_outputs(table: pa.Table, manifest: ProfileManifest) -> Any:
    column = manifest.prediction_column
    if column is None or column not in table.column_names or VERSION not in table.column_names:
        return None
    served = pc.equal(table.column(VERSION), manifest.version or "")
    if STATUS_CODE in table.column_names:
        served = pc.and_(served, pc.less(table.column(STATUS_CODE), SERVER_ERROR))
    outputs = table.filter(pc.fill_null(served, False)).column(column)
    if manifest.prediction_kind is ColumnKind.NUMERIC:
        return as_float(outputs)
    return label_values(outputs, ColumnKind.CATEGORICAL)


def _predictions(parts: list[Any], manifest: ProfileManifest) -> Any:
    if manifest.prediction_column is None:
        return None
    present = [p for p in parts if p is not None]
    dtype = np.float64 if manifest.prediction_kind is ColumnKind.NUMERIC else object
    return _concat(present, dtype)


def read_labels(
    root: Path, manifest: ProfileManifest, start: datetime, end: datetime
) -> FloatArray | ObjectArray:
    """Labels received in the window; a request labelled twice counts once (the latest)."""
    tables = []
    for file in partitions_since(root, FEEDBACK, start):
        try:
            table = pq.read_table(file, columns=[REQUEST_ID, LABEL, RECEIVED_AT])
        except (OSError, pa.ArrowException):
            continue  # the endpoint writes feedback whole; a foreign file is not ours to judge
        tables.append(_in_window(table, RECEIVED_AT, start, end))
    empty: Any = np.empty(0, np.float64 if manifest.label_kind is ColumnKind.NUMERIC else object)
    if not tables:
        return empty  # type: ignore[no-any-return]
    feedback = pa.concat_tables(tables, promote_options="permissive")
    if feedback.num_rows == 0:
        return empty  # type: ignore[no-any-return]
    order = pc.sort_indices(
        feedback, sort_keys=[(REQUEST_ID, "ascending"), (RECEIVED_AT, "descending")]
    )
    feedback = feedback.take(order)
    ids = feedback.column(REQUEST_ID).to_numpy(zero_copy_only=False)
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    latest = feedback.filter(pa.array(first)).column(LABEL)
    return label_values(latest, manifest.label_kind)  # type: ignore[no-any-return]
