"""Captured traffic for drift tests, written exactly as the local endpoint writes it
(`activities.local.capture`): one Parquet file per batch under `requests/date=.../`, feature
columns typed like the baseline, the champion's outputs in `prediction` / `score`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from activities.local.capture import (
    FEEDBACK,
    FEEDBACK_SCHEMA,
    REQUESTS,
    capture_dir,
    partition,
    request_schema,
)
from activities.loop.data_window import resolve_uri, write_parquet_atomic
from starters.demo.synthetic import FEATURES, generate_rows
from workflows.spec.models import ModelSpec

Shift = Callable[[pa.Table], pa.Table]


def production_rows(rows: int, *, seed: int, day: date = date(2026, 1, 1)) -> pa.Table:
    """Feature rows like the demo's production traffic (label included, for feedback)."""
    return generate_rows(day, rows, function=0, seed=seed, stream=11)


def shifted(table: pa.Table, column: str, transform: Callable[[Any], Any]) -> pa.Table:
    """The table with `column` replaced by `transform(values)` (same Arrow type)."""
    values = table.column(column).to_numpy()
    index = table.schema.get_field_index(column)
    new = pa.array(transform(values)).cast(table.schema.field(column).type)
    return table.set_column(index, column, new)


def write_capture(
    home: Path,
    spec: ModelSpec,
    rows: pa.Table,
    *,
    at: datetime | list[datetime],
    version: str = "1",
    estimator: Any = None,
    shadow: bool = False,
    schema: pa.Schema | None = None,
    scores: bool = True,
) -> list[str]:
    """Capture `rows` as answers of `version` at `at` (one file; `at` a list: each row's
    time); returns the request ids. `schema` overrides the feature types (to simulate a
    producer that changed them); `scores=False` captures the predicted class only."""
    baseline = pq.read_schema(resolve_uri(home, spec.data.baseline_holdout))
    target = schema or request_schema(spec, baseline)
    n = rows.num_rows
    ids = [uuid.uuid4().hex for _ in range(n)]
    features = rows.select([name for name in spec.feature_names if name in rows.column_names])
    prediction = np.full(n, np.nan)
    score = np.full(n, np.nan)
    if estimator is not None:
        proba = estimator.predict_proba(features.select(list(FEATURES)).to_pandas())
        prediction = (proba[:, 1] >= 0.5).astype(np.float64)
        # Without scores: a model whose endpoint captures its predicted class only.
        score = proba[:, 1] if scores else np.full(n, np.nan)
    columns: dict[str, Any] = {
        "request_id": ids,
        "variant": [f"v{version}"] * n,
        "version": [version] * n,
        "shadow": [shadow] * n,
        "generation": [1] * n,
        "captured_at": at if isinstance(at, list) else [at] * n,
        "latency_ms": [1.0] * n,
        "status_code": [200] * n,
        "error": [None] * n,
        "prediction": prediction,
        "score": score,
    }
    for name in features.column_names:
        columns[name] = features.column(name)
    table = pa.table({f.name: columns[f.name] for f in target if f.name in columns}, schema=None)
    table = table.cast(pa.schema([target.field(name) for name in table.column_names]))
    root = capture_dir(home, spec)
    day_dir = partition(root, REQUESTS, (at[0] if isinstance(at, list) else at).date())
    write_parquet_atomic(table, day_dir / f"part-{uuid.uuid4().hex}.parquet")
    return ids


def write_feedback(
    home: Path, spec: ModelSpec, request_ids: list[str], labels: Any, *, at: datetime
) -> None:
    n = len(request_ids)
    table = pa.table(
        {
            "request_id": request_ids,
            "label": np.asarray(labels, dtype=np.float64),
            "received_at": [at] * n,
        },
        schema=FEEDBACK_SCHEMA,
    )
    root = capture_dir(home, spec)
    write_parquet_atomic(
        table, partition(root, FEEDBACK, at.date()) / f"part-{uuid.uuid4().hex}.parquet"
    )


def hours_before(moment: datetime, hours: float) -> datetime:
    return moment - timedelta(hours=hours)
