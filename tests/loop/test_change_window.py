"""The change-aware data window: after a regime change the window starts at the change point
(rows before it left out), the baseline is a floor (a share of the new-regime rows), and the
loop also gets the newest part of its holdout and captured live traffic replayed with its
feedback labels."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from activities.local import capture as layout
from activities.loop.data_window import select_data_window, write_parquet_atomic
from tests.loop.test_data_window import (
    AS_OF,
    DAYS,
    ROWS_PER_DAY,
    make_spec,
    partition,
    rows,
    select,
    write_baseline,
    write_window,
)
from workflows.loop.models import DataWindow, DataWindowRequest
from workflows.spec.models import ModelSpec

# Three days before AS_OF, at noon: two and a half days of the new regime.
CHANGE = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)


def select_since(home: Path, spec: ModelSpec, regime_start: datetime | None) -> DataWindow:
    request = DataWindowRequest(
        loop_id="retrain-m-2", spec=spec, as_of=AS_OF, regime_start=regime_start
    )
    return select_data_window(home, request)


def after_change(home: Path) -> int:
    """Rows of the window's files whose time is at or after CHANGE."""
    total = 0
    for day in (date(2026, 3, 8), date(2026, 3, 9), date(2026, 3, 10)):
        times = pq.read_table(partition(home, day)).column("event_time").to_pylist()
        total += sum(1 for t in times if t >= CHANGE)
    return total


def test_after_a_regime_change_the_window_starts_at_the_change(tmp_path: Path) -> None:
    # More rows a day, so the new regime alone passes min_rows (100).
    write_window(tmp_path)
    for day in (date(2026, 3, 8), date(2026, 3, 9), date(2026, 3, 10)):
        write_parquet_atomic(rows(day, 200, stream=5), partition(tmp_path, day))
    write_baseline(tmp_path, count=2000)
    spec = make_spec(min_days_fraction=1.0)
    window = select_since(tmp_path, spec, CHANGE)
    assert window.sufficient, window.checks
    assert window.regime_start == CHANGE
    assert (window.start, window.end) == (date(2026, 3, 8), date(2026, 3, 10))
    assert (window.days_present, window.days_expected) == (3, 3)
    assert window.query.endswith(
        f"AND event_time >= {CHANGE.isoformat()} (since the regime change)"
    )
    assert window.labelled_rows == after_change(tmp_path) < 600
    assert window.training_set is not None and window.holdout_set is not None
    times = pq.read_table(window.holdout_set.uri).column("event_time").to_pylist()
    assert min(times) >= CHANGE
    # The baseline is a floor: 10% of the new regime's training rows, not 30% of the set.
    production, baseline = window.production_rows_in_training, window.baseline_rows_in_training
    assert baseline == round(production * 0.1)
    assert any("regime change at 2026-03-08T12:00:00+00:00" in note for note in window.notes)
    # The policy sets the floor.
    none = select_since(
        tmp_path, make_spec(min_days_fraction=1.0, regime_baseline_share=0.0), CHANGE
    )
    assert none.baseline_rows_in_training == 0


def test_a_regime_change_older_than_the_window_or_in_the_future_changes_nothing(
    tmp_path: Path,
) -> None:
    write_window(tmp_path)
    write_baseline(tmp_path)
    spec = make_spec()
    plain = select(tmp_path, spec)
    for moment in (AS_OF - timedelta(days=DAYS + 1), AS_OF + timedelta(hours=1)):
        window = select_since(tmp_path, spec, moment)
        assert window.regime_start is None and window.start == plain.start
        assert window.labelled_rows == DAYS * ROWS_PER_DAY


def test_too_little_data_since_the_change_is_insufficient_with_the_numbers(tmp_path: Path) -> None:
    write_window(tmp_path)
    write_baseline(tmp_path)
    window = select_since(tmp_path, make_spec(), AS_OF - timedelta(hours=6))
    assert not window.sufficient
    failed = {c.name: c for c in window.checks if not c.passed}
    assert "min_rows" in failed and failed["min_rows"].value < 100


def test_recent_is_the_newest_quarter_of_the_holdout(tmp_path: Path) -> None:
    write_window(tmp_path)
    write_baseline(tmp_path)
    window = select(tmp_path, make_spec())
    assert window.recent_set is not None and window.holdout_set is not None
    holdout = pq.read_table(window.holdout_set.uri).column("event_time").to_pylist()
    recent = pq.read_table(window.recent_set.uri).column("event_time").to_pylist()
    assert len(recent) == -(-len(holdout) // 4)
    assert min(recent) >= sorted(holdout)[-len(recent)]


def write_captured(home: Path, count: int, at: datetime, label_delay: timedelta) -> None:
    """`count` live answers captured at `at` with their features, labelled later."""
    table = rows(at.date(), count, stream=9)
    ids = [f"req-{at:%H%M%S}-{i}" for i in range(count)]
    requests = pa.table(
        {
            layout.REQUEST_ID: ids,
            layout.VARIANT: ["v1"] * count,
            layout.VERSION: ["1"] * count,
            layout.SHADOW: [False] * count,
            layout.GENERATION: [1] * count,
            layout.CAPTURED_AT: pa.array([at] * count, pa.timestamp("us", tz="UTC")),
            layout.LATENCY_MS: [2.0] * count,
            layout.STATUS_CODE: pa.array([200] * count, pa.int32()),
            layout.ERROR: pa.array([None] * count, pa.string()),
            layout.PREDICTION: [1.0] * count,
            layout.SCORE: [0.7] * count,
            "x": table.column("x"),
            "n": table.column("n"),
            "c": table.column("c"),
        }
    )
    root = home / "data" / "captured"
    write_parquet_atomic(
        requests, layout.partition(root, layout.REQUESTS, at.date()) / "part-1.parquet"
    )
    feedback = pa.table(
        {
            layout.REQUEST_ID: ids,
            layout.LABEL: table.column("y").cast(pa.float64()),
            layout.RECEIVED_AT: pa.array([at + label_delay] * count, pa.timestamp("us", tz="UTC")),
        },
        schema=layout.FEEDBACK_SCHEMA,
    )
    write_parquet_atomic(
        feedback, layout.partition(root, layout.FEEDBACK, at.date()) / "part-1.parquet"
    )


def test_captured_traffic_is_replayed_with_its_labels(tmp_path: Path) -> None:
    write_window(tmp_path)
    write_baseline(tmp_path)
    # 120 answers labelled since the change, 80 before it (left out after a change).
    write_captured(tmp_path, 120, AS_OF - timedelta(hours=2), timedelta(minutes=5))
    write_captured(tmp_path, 80, CHANGE - timedelta(days=1), timedelta(minutes=5))
    window = select(tmp_path, make_spec())
    assert window.replay_set is not None and window.replay_set.rows == 200
    table = pq.read_table(window.replay_set.uri)
    assert table.column_names == ["x", "n", "c", "y", "event_time"]
    assert table.schema.field("y").type == pa.int64()
    assert np.isin(table.column("y").to_numpy(), [0, 1]).all()
    # After the change only the new regime's traffic is replayed; too little is left out.
    spec = make_spec(min_rows=10, min_days_fraction=0.0)
    since = select_since(tmp_path, spec, CHANGE)
    assert since.replay_set is not None and since.replay_set.rows == 120
    few = select_since(
        tmp_path, make_spec(min_rows=10, min_days_fraction=0.0, replay_min_rows=500), CHANGE
    )
    assert few.replay_set is None
    assert any(
        "120 labelled live requests" in note and "not replayed" in note for note in few.notes
    )
