"""The local endpoint's data capture layout, shared by the endpoint (writer), the canary
analysis and the drift monitor (readers).

Under the model's capture directory (`ModelSpec.data.captured`, default `data/<model>/captured`
in the retrain home):

- `requests/date=YYYY-MM-DD/part-<epoch us>-<n>.parquet`: one row per answer a variant gave
  (a mirrored request gives two rows with the same `request_id`, the shadow one flagged), with
  the request's features as columns named like the spec's features;
- `feedback/date=YYYY-MM-DD/part-<epoch us>-<n>.parquet`: ground-truth labels by request id.

A cloud endpoint's capture (SageMaker Data Capture, Vertex request-response logging) and its
ground truth are read into the same layout by the backend's `CaptureSource`
(`activities/cloud_capture.py`): its rows carry generation 0, no latency and status 200 (the
platforms capture successful answers only; their metrics store has latency and errors).

Partitions are by the endpoint's clock (UTC). Files are written whole (temporary name, then an
atomic rename), so readers never see a partial file.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

from activities.loop.data_window import resolve_uri
from workflows.spec.models import ModelSpec

REQUESTS = "requests"
FEEDBACK = "feedback"

# Columns every captured answer has besides the features.
REQUEST_ID = "request_id"
VARIANT = "variant"
VERSION = "version"
SHADOW = "shadow"
GENERATION = "generation"
CAPTURED_AT = "captured_at"
LATENCY_MS = "latency_ms"
STATUS_CODE = "status_code"
ERROR = "error"
PREDICTION = "prediction"
# Positive-class probability (binary classification), else null.
SCORE = "score"

LABEL = "label"
RECEIVED_AT = "received_at"

_TIMESTAMP = pa.timestamp("us", tz="UTC")
META_FIELDS = (
    pa.field(REQUEST_ID, pa.string(), nullable=False),
    pa.field(VARIANT, pa.string(), nullable=False),
    pa.field(VERSION, pa.string(), nullable=False),
    pa.field(SHADOW, pa.bool_(), nullable=False),
    pa.field(GENERATION, pa.int64(), nullable=False),
    pa.field(CAPTURED_AT, _TIMESTAMP, nullable=False),
    pa.field(LATENCY_MS, pa.float64(), nullable=False),
    pa.field(STATUS_CODE, pa.int32(), nullable=False),
    pa.field(ERROR, pa.string()),
    pa.field(PREDICTION, pa.float64()),
    pa.field(SCORE, pa.float64()),
)
META_COLUMNS = frozenset(field.name for field in META_FIELDS)
FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field(REQUEST_ID, pa.string(), nullable=False),
        pa.field(LABEL, pa.float64(), nullable=False),
        pa.field(RECEIVED_AT, _TIMESTAMP, nullable=False),
    ]
)


def capture_dir(home: Path, spec: ModelSpec) -> Path:
    """The model's capture directory (absolute). A cloud model whose data live in a bucket has
    its capture read into `<home>/capture/<model>` by its backend's `CaptureSource` (the
    layout is local files, never a bucket path taken for a folder)."""
    location = spec.data.capture_location
    if "://" in location:
        return home / "capture" / spec.name
    return resolve_uri(home, location)


def request_schema(spec: ModelSpec, reference: pa.Schema) -> pa.Schema:
    """Meta columns, then one column per feature typed as in `reference` (the baseline
    holdout's schema, i.e. what the model was trained on), so captured rows read back exactly
    like training rows."""
    if clashes := META_COLUMNS.intersection(spec.feature_names):
        raise ValueError(f"features clash with capture columns: {sorted(clashes)}")
    if missing := [name for name in spec.feature_names if name not in reference.names]:
        raise ValueError(f"features missing from the reference schema: {missing}")
    features = [reference.field(name).with_nullable(True) for name in spec.feature_names]
    return pa.schema([*META_FIELDS, *features])


def partition(root: Path, kind: str, day: date) -> Path:
    return root / kind / f"date={day.isoformat()}"


def partitions_since(root: Path, kind: str, since: datetime) -> list[Path]:
    """Every Parquet file of `kind` in partitions dated on or after `since` (UTC), sorted;
    never a writer's temporary file (dot-files, renamed into place when complete)."""
    base = root / kind
    if not base.is_dir():
        return []
    first = since.astimezone(UTC).date().isoformat()
    return sorted(
        file
        for directory in base.glob("date=*")
        if directory.name.removeprefix("date=") >= first
        for file in directory.glob("*.parquet")
        if not file.name.startswith(".")
    )
