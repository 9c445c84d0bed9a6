"""The loop's data window: selection, coverage checks with their numbers, the 70/30 mix."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.loop.data_window import (
    DataWindowActivities,
    select_data_window,
    window_bounds,
    write_parquet_atomic,
)
from workflows.loop.models import CoverageCheck, DataWindow, DataWindowRequest
from workflows.spec.models import (
    DataSources,
    DataWindowPolicy,
    Feature,
    FeatureKind,
    LoopPolicy,
    ModelSpec,
)

AS_OF = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
DAYS = 10
ROWS_PER_DAY = 30


def make_spec(**window: float) -> ModelSpec:
    policy = DataWindowPolicy.model_validate({"days": DAYS, "min_rows": 100, **window})
    return ModelSpec(
        name="m",
        features=[
            Feature(name="x"),
            Feature(name="n"),
            Feature(name="c", kind=FeatureKind.CATEGORICAL),
        ],
        label="y",
        segment_column="seg",
        data=DataSources(
            labelled="data/labelled",
            baseline_holdout="data/baseline.parquet",
            golden_set="data/golden.parquet",
        ),
        loop=LoopPolicy(window=policy),
    )


def rows(
    day: date,
    count: int,
    *,
    stream: int = 0,
    positive_share: float = 0.5,
    unlabelled_share: float = 0.0,
) -> pa.Table:
    rng = np.random.default_rng([stream, day.toordinal()])
    seconds = np.sort(rng.integers(0, 86_400, count))
    return pa.table(
        {
            "x": rng.normal(size=count),
            "n": rng.integers(0, 100, count),
            "c": rng.choice(["a", "b", "c"], count),
            "y": pa.array(
                (rng.random(count) < positive_share).astype(np.int64),
                mask=rng.random(count) < unlabelled_share,
            ),
            "event_time": pa.array(
                np.datetime64(day.isoformat(), "s") + seconds.astype("timedelta64[s]"),
                type=pa.timestamp("s", tz="UTC"),
            ),
            "seg": rng.choice(["north", "south"], count),
        }
    )


def window_days() -> list[date]:
    start, end = window_bounds(AS_OF, DAYS)
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def partition(home: Path, day: date, name: str = "part-0.parquet") -> Path:
    return home / "data" / "labelled" / f"date={day.isoformat()}" / name


def write_window(
    home: Path,
    days: Sequence[date] | None = None,
    *,
    positive_share: float = 0.5,
    unlabelled_share: float = 0.0,
) -> None:
    for day in window_days() if days is None else days:
        table = rows(
            day, ROWS_PER_DAY, positive_share=positive_share, unlabelled_share=unlabelled_share
        )
        write_parquet_atomic(table, partition(home, day))


def write_baseline(home: Path, count: int = 400) -> None:
    write_parquet_atomic(rows(date(2026, 1, 1), count, stream=1), home / "data/baseline.parquet")


def select(
    home: Path, spec: ModelSpec, extra: Sequence[str] = (), loop_id: str = "retrain-m-1"
) -> DataWindow:
    request = DataWindowRequest(loop_id=loop_id, spec=spec, as_of=AS_OF, extra_uris=list(extra))
    return select_data_window(home, request)


def check(window: DataWindow, name: str) -> CoverageCheck:
    return next(c for c in window.checks if c.name == name)


def failed(window: DataWindow) -> list[str]:
    return [c.name for c in window.checks if not c.passed]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    write_window(tmp_path)
    write_baseline(tmp_path)
    return tmp_path


def test_window_is_the_last_n_utc_days_ending_on_as_of() -> None:
    assert window_bounds(AS_OF, 30) == (date(2026, 2, 9), date(2026, 3, 10))
    # 01:00 on the 11th in UTC+3 is still the 10th in UTC.
    late = datetime(2026, 3, 11, 1, tzinfo=timezone(timedelta(hours=3)))
    assert window_bounds(late, 1) == (date(2026, 3, 10), date(2026, 3, 10))


def test_sufficient_window_writes_the_datasets(home: Path) -> None:
    # A partition outside the window is not read.
    write_parquet_atomic(rows(date(2026, 3, 11), 50), partition(home, date(2026, 3, 11)))
    window = select(home, make_spec())

    assert window.sufficient, window.checks
    assert (window.start, window.end) == (date(2026, 3, 1), date(2026, 3, 10))
    assert window.query == (
        f"{(home / 'data/labelled').resolve()}/date=*/*.parquet "
        "WHERE date>=2026-03-01 AND date<=2026-03-10"
    )
    assert [f.day for f in window.files] == window_days()
    assert window.rows == window.labelled_rows == DAYS * ROWS_PER_DAY
    assert (window.days_present, window.days_expected) == (DAYS, DAYS)
    assert sum(window.class_counts.values()) == window.labelled_rows
    assert set(window.class_counts) == {"0", "1"}
    for dataset in (window.training_set, window.holdout_set, window.baseline_eval_set):
        assert dataset is not None
        assert Path(dataset.uri).parent == home / "runs/m/retrain-m-1/data"
        table = pq.read_table(dataset.uri)
        assert table.num_rows == dataset.rows
        assert table.column_names == ["x", "n", "c", "y", "event_time", "seg"]
        assert table["y"].null_count == 0
    assert window.baseline is not None and window.baseline.rows == 400


def test_same_request_gives_identical_files_and_hashes(home: Path) -> None:
    spec = make_spec()
    first = select(home, spec)
    assert first.training_set is not None
    data = Path(first.training_set.uri).read_bytes()
    again = select(home, spec)
    assert again == first
    assert Path(first.training_set.uri).read_bytes() == data
    # The contents, not the loop, decide the bytes.
    other = select(home, spec, loop_id="retrain-m-2")
    assert other.training_set is not None
    assert other.training_set.sha256 == first.training_set.sha256


def test_production_is_70_percent_of_training_and_holdout_is_disjoint(home: Path) -> None:
    window = select(home, make_spec())
    assert window.training_set and window.holdout_set and window.baseline_eval_set
    production, baseline = window.production_rows_in_training, window.baseline_rows_in_training
    assert baseline == round(production * 0.3 / 0.7)
    assert window.training_set.rows == production + baseline
    assert production + window.holdout_set.rows == window.labelled_rows
    assert 0.1 < window.holdout_set.rows / window.labelled_rows < 0.3

    def keys(uri: str) -> set[tuple[float, object]]:
        table = pq.read_table(uri)
        return set(zip(table["x"].to_pylist(), table["event_time"].to_pylist(), strict=True))

    training, holdout = keys(window.training_set.uri), keys(window.holdout_set.uri)
    baseline_eval = keys(window.baseline_eval_set.uri)
    assert not training & holdout
    assert not training & baseline_eval
    assert len(baseline_eval) + baseline <= 400


def test_production_share_is_a_policy(home: Path) -> None:
    window = select(home, make_spec(production_share=0.5, holdout_fraction=0.3))
    assert window.production_rows_in_training == window.baseline_rows_in_training


def test_small_baseline_is_used_whole_and_counts_report_it(tmp_path: Path) -> None:
    write_window(tmp_path)
    write_baseline(tmp_path, count=40)
    window = select(tmp_path, make_spec())
    assert window.sufficient and window.baseline_eval_set is not None
    assert window.baseline_rows_in_training + window.baseline_eval_set.rows == 40
    share = window.production_rows_in_training / (
        window.production_rows_in_training + window.baseline_rows_in_training
    )
    assert share > 0.85


def test_too_few_rows(home: Path) -> None:
    window = select(home, make_spec(min_rows=1000))
    assert not window.sufficient and failed(window) == ["min_rows"]
    rows_check = check(window, "min_rows")
    assert (rows_check.value, rows_check.threshold) == (300, 1000)
    assert window.training_set is None


def test_missing_days(tmp_path: Path) -> None:
    days = window_days()
    write_window(tmp_path, days=days[:3] + days[7:])
    window = select(tmp_path, make_spec())
    assert failed(window) == ["days_present"]
    days_check = check(window, "days_present")
    assert (days_check.value, days_check.threshold) == (0.6, 0.8)
    assert (window.days_present, window.days_expected) == (6, 10)
    assert "missing: 2026-03-04, 2026-03-05, 2026-03-06, 2026-03-07" in days_check.detail


def test_class_imbalance_and_single_class(tmp_path: Path) -> None:
    write_window(tmp_path, positive_share=0.995)
    window = select(tmp_path, make_spec())
    assert failed(window) == ["class_balance"]
    balance = check(window, "class_balance")
    assert balance.value == window.class_counts["0"] / 300 < 0.02
    assert "outside: 0, 1" in balance.detail

    write_window(tmp_path, positive_share=1.0)
    window = select(tmp_path, make_spec())
    assert set(failed(window)) == {"classes_present", "class_balance"}
    assert window.class_counts == {"1": 300}
    assert check(window, "classes_present").value == 1


def test_label_coverage(tmp_path: Path) -> None:
    write_window(tmp_path, unlabelled_share=0.5)
    window = select(tmp_path, make_spec(min_rows=10))
    assert failed(window) == ["label_coverage"]
    coverage = check(window, "label_coverage")
    assert coverage.value == window.labelled_rows / 300
    assert 0.35 < coverage.value < 0.65 and coverage.threshold == 0.9


def test_missing_column_is_insufficient_not_an_error(home: Path) -> None:
    day = window_days()[4]
    write_parquet_atomic(rows(day, ROWS_PER_DAY).drop_columns(["n"]), partition(home, day))
    window = select(home, make_spec())
    assert not window.sufficient and failed(window) == ["schema"]
    schema = check(window, "schema")
    assert (schema.value, schema.threshold) == (1, 0)
    assert "missing column 'n' in 1 of 10 files" in schema.detail
    assert "date=2026-03-05" in schema.detail


def test_timestamps_of_any_unit_or_zone_are_normalised(home: Path) -> None:
    day = window_days()[3]
    table = rows(day, ROWS_PER_DAY)
    nanos = table["event_time"].cast(pa.int64()).to_numpy() * 1_000_000_000 + 123
    table = table.set_column(4, "event_time", pa.array(nanos, type=pa.timestamp("ns")))
    write_parquet_atomic(table, partition(home, day))
    window = select(home, make_spec())
    assert window.sufficient and window.days_present == DAYS
    assert window.training_set is not None
    training = pq.read_table(window.training_set.uri)
    assert training.schema.field("event_time").type == pa.timestamp("us", tz="UTC")


def test_mistyped_column(home: Path) -> None:
    day = window_days()[0]
    table = rows(day, ROWS_PER_DAY)
    table = table.set_column(0, "x", table["x"].cast(pa.string()))
    write_parquet_atomic(table, partition(home, day))
    window = select(home, make_spec())
    assert failed(window) == ["schema"]
    assert "column 'x' must be numeric (double, string)" in check(window, "schema").detail


def test_extra_uris_are_read_and_deduplicated(home: Path) -> None:
    extra = home / "incoming" / "batch.parquet"
    write_parquet_atomic(rows(date(2026, 3, 10), 40, stream=2), extra)
    inside = str(partition(home, window_days()[0]))
    window = select(home, make_spec(), extra=["incoming/batch.parquet", inside, str(extra)])
    assert window.sufficient
    assert len(window.files) == DAYS + 1
    assert window.files[-1].uri == str(extra.resolve()) and window.files[-1].day is None
    assert window.rows == DAYS * ROWS_PER_DAY + 40
    assert window.query.endswith(f"+ extra: {Path(inside).resolve()}, {extra.resolve()}")


def test_corrupted_parquet_is_invalid_data(home: Path) -> None:
    broken = partition(home, window_days()[2])
    broken.write_bytes(broken.read_bytes()[:-100])
    with pytest.raises(ApplicationError) as info:
        select(home, make_spec())
    assert info.value.type == "InvalidData" and info.value.non_retryable
    assert str(broken) in info.value.message


def test_missing_extra_file_is_invalid_data(home: Path) -> None:
    with pytest.raises(ApplicationError, match=r"gone\.parquet") as info:
        select(home, make_spec(), extra=["gone.parquet"])
    assert info.value.type == "InvalidData"


def test_baseline_without_the_label_is_invalid_data(home: Path) -> None:
    table = rows(date(2026, 1, 1), 100).drop_columns(["y"])
    write_parquet_atomic(table, home / "data/baseline.parquet")
    with pytest.raises(ApplicationError, match=r"baseline holdout .* missing column 'y'") as info:
        select(home, make_spec())
    assert info.value.type == "InvalidData"


def test_empty_window_is_insufficient(tmp_path: Path) -> None:
    window = select(tmp_path, make_spec())
    assert not window.sufficient and window.files == [] and window.rows == 0
    assert "does not exist" in check(window, "files_found").detail

    write_window(tmp_path, days=[date(2025, 1, 1)])
    window = select(tmp_path, make_spec())
    found = check(window, "files_found")
    assert not found.passed and found.value == 0
    assert "no partitions under" in found.detail and "2026-03-01..2026-03-10" in found.detail
    assert check(window, "label_coverage").value == 0


def test_activity_heartbeats_per_file(home: Path) -> None:
    env = ActivityEnvironment()
    beats: list[str] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    request = DataWindowRequest(loop_id="retrain-m-1", spec=make_spec(), as_of=AS_OF)
    window = env.run(DataWindowActivities(home).select, request)
    assert window.sufficient
    assert beats == [f.uri for f in window.files] + [
        str((home / "data/baseline.parquet").resolve())
    ]


def test_split_is_stable_across_processes(home: Path) -> None:
    # Another interpreter with another str-hash seed must produce the same bytes.
    first = select(home, make_spec())
    assert first.training_set is not None
    script = (
        "import sys; from pathlib import Path; from tests.loop.test_data_window import make_spec, "
        "select; print(select(Path(sys.argv[1]), make_spec()).training_set.sha256)"
    )
    output = subprocess.run(
        [sys.executable, "-c", script, str(home)],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert output.strip() == first.training_set.sha256
