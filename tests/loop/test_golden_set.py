"""The golden set: registered once with its hash, then every change fails loudly."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.loop.data_window import write_parquet_atomic
from activities.loop.golden_set import (
    GoldenSetActivities,
    registration_path,
    reregister_golden_set,
    verify_golden_set,
)
from workflows.spec.models import DataSources, Feature, ModelSpec

REGISTERED = datetime(2026, 3, 1, tzinfo=UTC)
LATER = datetime(2026, 3, 9, tzinfo=UTC)


def make_spec(golden: str = "data/golden.parquet") -> ModelSpec:
    return ModelSpec(
        name="m",
        features=[Feature(name="x")],
        label="y",
        data=DataSources(
            labelled="data/labelled", baseline_holdout="data/baseline.parquet", golden_set=golden
        ),
    )


def write_golden(home: Path, values: list[float], name: str = "golden.parquet") -> Path:
    table = pa.table({"x": values, "y": [int(v > 0) for v in values]})
    return Path(write_parquet_atomic(table, home / "data" / name).uri)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    write_golden(tmp_path, [0.5, -1.0, 2.0])
    return tmp_path


def test_first_call_registers_then_verifies(home: Path) -> None:
    spec = make_spec()
    golden = verify_golden_set(home, spec, now=REGISTERED)
    assert (golden.rows, golden.registered_at) == (3, REGISTERED)
    assert golden.uri == str((home / "data/golden.parquet").resolve())
    assert registration_path(home, "m").is_file()
    # Later calls return the registration itself, not a new one.
    assert verify_golden_set(home, spec, now=LATER) == golden


def test_changed_content_fails_loudly(home: Path) -> None:
    spec = make_spec()
    golden = verify_golden_set(home, spec, now=REGISTERED)
    write_golden(home, [0.5, -1.0, 2.5])
    with pytest.raises(ApplicationError) as info:
        verify_golden_set(home, spec, now=LATER)
    error = info.value
    assert error.type == "GoldenSetChanged" and error.non_retryable
    assert golden.sha256 in error.message and "sha256 is now" in error.message


def test_vanished_file_fails(home: Path) -> None:
    verify_golden_set(home, make_spec(), now=REGISTERED)
    (home / "data/golden.parquet").unlink()
    with pytest.raises(ApplicationError, match="vanished") as info:
        verify_golden_set(home, make_spec(), now=LATER)
    assert info.value.type == "GoldenSetChanged"


def test_spec_naming_another_file_fails(home: Path) -> None:
    verify_golden_set(home, make_spec(), now=REGISTERED)
    write_golden(home, [1.0], name="other.parquet")
    with pytest.raises(ApplicationError, match="spec now names") as info:
        verify_golden_set(home, make_spec("data/other.parquet"), now=LATER)
    assert info.value.type == "GoldenSetChanged"


def test_reregistering_is_the_way_to_change_it(home: Path) -> None:
    spec = make_spec()
    before = verify_golden_set(home, spec, now=REGISTERED)
    write_golden(home, [3.0, 4.0])
    after = reregister_golden_set(home, spec, now=LATER)
    assert after.sha256 != before.sha256 and after.rows == 2
    assert verify_golden_set(home, spec, now=LATER) == after


def test_unreadable_golden_set_cannot_be_registered(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data/golden.parquet").write_bytes(b"not parquet")
    with pytest.raises(ApplicationError, match="cannot read golden set") as info:
        verify_golden_set(tmp_path, make_spec(), now=REGISTERED)
    assert info.value.type == "InvalidData"
    assert not registration_path(tmp_path, "m").exists()


def test_activity(home: Path) -> None:
    golden = ActivityEnvironment().run(GoldenSetActivities(home).verify, make_spec())
    assert golden.rows == 3 and golden.registered_at.tzinfo is not None
