"""The demo's synthetic stream: the concept really changes on the drift day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from sklearn.tree import DecisionTreeClassifier  # type: ignore[import-untyped, unused-ignore]

from activities.loop.data_window import resolve_uri, select_data_window
from starters.demo.synthetic import FEATURES, append_fresh_data, write_demo_dataset
from workflows.loop.models import DataWindowRequest
from workflows.spec.models import FeatureKind

START = date(2026, 1, 1)
DAYS = 20
DRIFT = date(2026, 1, 13)
ROWS = 200


def read_days(home: Path, days: list[date]) -> pa.Table:
    return pa.concat_tables(
        pq.read_table(home / f"data/demo/labelled/date={day.isoformat()}/part-0.parquet")
        for day in days
    )


def xy(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    table = table.filter(pc.is_valid(table["label"]))
    features = np.column_stack([table[name].to_numpy() for name in FEATURES])
    return features, table["label"].to_numpy()


def test_dataset_layout_and_spec(tmp_path: Path) -> None:
    spec = write_demo_dataset(
        tmp_path, "demo", START, DAYS, DRIFT, rows_per_day=ROWS, seed=3, baseline_rows=100
    )
    labelled = resolve_uri(tmp_path, spec.data.labelled)
    assert sorted(p.name for p in labelled.iterdir()) == [
        f"date={START + timedelta(days=i)}" for i in range(DAYS)
    ]
    day = pq.read_table(labelled / "date=2026-01-05/part-0.parquet")
    assert day.num_rows == ROWS and day["label"].null_count == 0
    assert set(pc.unique(day["label"]).to_pylist()) == {0, 1}
    times = day["event_time"]
    assert times.type == pa.timestamp("us", tz="UTC")
    assert pc.min(times).as_py().date() == pc.max(times).as_py().date() == date(2026, 1, 5)
    # Labels arrive late: half of the last two days' labels are still missing.
    last = pq.read_table(labelled / "date=2026-01-20/part-0.parquet")
    assert 0.3 < last["label"].null_count / ROWS < 0.7
    for uri in (spec.data.baseline_holdout, spec.data.golden_set):
        assert pq.read_table(resolve_uri(tmp_path, uri))["label"].null_count == 0
    categorical = {f.name for f in spec.features if f.kind is FeatureKind.CATEGORICAL}
    assert categorical == {"elevel", "car", "zipcode"}
    assert spec.segment_column in day.column_names


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    for home in (tmp_path / "a", tmp_path / "b"):
        write_demo_dataset(
            home, "demo", START, 3, None, rows_per_day=50, seed=7, baseline_rows=50, golden_rows=50
        )
    for path in (tmp_path / "a").rglob("*.parquet"):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()


def test_concept_changes_on_the_drift_day(tmp_path: Path) -> None:
    write_demo_dataset(
        tmp_path, "demo", START, DAYS, DRIFT, rows_per_day=ROWS, baseline_rows=10, golden_rows=10
    )
    days = [START + timedelta(days=i) for i in range(DAYS)]
    before = [d for d in days if d < DRIFT]
    after = [d for d in days if d >= DRIFT]
    train_x, train_y = xy(read_days(tmp_path, before[:-2]))
    model = DecisionTreeClassifier(max_depth=4, random_state=0).fit(train_x, train_y)
    pre_x, pre_y = xy(read_days(tmp_path, before[-2:]))
    post_x, post_y = xy(read_days(tmp_path, after))
    pre_accuracy, post_accuracy = model.score(pre_x, pre_y), model.score(post_x, post_y)
    assert pre_accuracy > 0.9
    assert post_accuracy < 0.65
    # The positive rate falls with the new concept too.
    assert train_y.mean() - post_y.mean() > 0.08


def test_fresh_data_lands_in_the_window(tmp_path: Path) -> None:
    # A full default window (30 days) of data, so coverage passes.
    spec = write_demo_dataset(tmp_path, "demo", START, 30, DRIFT, rows_per_day=ROWS)
    last = START + timedelta(days=29)
    uri = append_fresh_data(tmp_path, spec, part=1, day=last, rows=100)
    assert uri.endswith(f"date={last}/part-1.parquet") and Path(uri).is_absolute()
    request = DataWindowRequest(
        loop_id="retrain-demo-1",
        spec=spec,
        as_of=datetime(2026, 1, 30, 18, tzinfo=UTC),
        extra_uris=[uri],
    )
    window = select_data_window(tmp_path, request)
    assert window.sufficient, window.checks
    assert window.rows == 30 * ROWS + 100 and window.files[-1].uri == uri
    share = window.production_rows_in_training / (
        window.production_rows_in_training + window.baseline_rows_in_training
    )
    assert abs(share - 0.7) < 0.01
