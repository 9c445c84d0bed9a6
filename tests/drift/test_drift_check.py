"""The `check_drift` activity on real files: a registered spec and champion, captured traffic
written as the endpoint writes it, feedback labels. No Temporal here
(tests/drift/test_drift_monitor.py runs the workflow)."""

from __future__ import annotations

import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

from activities.drift.check import StoredReport, check_drift
from activities.drift.profile import profiles_dir
from activities.files import FILE_MODE
from activities.local.capture import request_schema
from activities.local.registry import MlflowRegistry
from activities.loop.data_window import loop_data_dir, resolve_uri, write_parquet_atomic
from activities.specs import SpecStore
from tests.support.drift_harness import production_rows, shifted, write_capture, write_feedback
from tests.support.endpoint_harness import train_versions
from tests.support.loop_harness import with_changes
from workflows.coordinator.triggers import Severity, TriggerKind
from workflows.drift.models import (
    ColumnRole,
    ColumnStatus,
    DriftCheckInput,
    DriftReport,
    ReportStatus,
)
from workflows.drift.rules import monitor_trigger
from workflows.loop.models import ModelVersion, PromoteRequest
from workflows.spec.models import ModelSpec

NOW = datetime.now(UTC).replace(microsecond=0)
RECENT = NOW - timedelta(hours=2)


class Setup:
    def __init__(self, home: Path, spec: ModelSpec, versions: list[ModelVersion]) -> None:
        self.home = home
        self.spec = spec
        self.versions = versions
        self.registry = MlflowRegistry(home)
        self.estimator = self.registry.load(versions[1])
        self.checks = 0

    def capture(self, rows: pa.Table, **options: Any) -> list[str]:
        options.setdefault("at", RECENT)
        options.setdefault("estimator", self.estimator)
        options.setdefault("version", "2")
        return write_capture(self.home, self.spec, rows, **options)

    def check(self, spec: ModelSpec | None = None) -> DriftReport:
        self.checks += 1
        return check_drift(
            self.home,
            spec or self.spec,
            self.registry,
            DriftCheckInput(model=self.spec.name, check_id=f"c{self.checks}", window_end=NOW),
        )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelSpec, list[ModelVersion]]:
    """Training and registering costs seconds: once per module, copied per test."""
    home = tmp_path_factory.mktemp("drift") / "home"
    spec, versions = train_versions(home, "driftm", count=2, baseline_rows=4000)
    # Version 2 (gradient boosting) follows the concept closely, so its outputs move with age.
    registry = MlflowRegistry(home)
    registry.promote(PromoteRequest(model="driftm", version="2", loop_id="retrain-driftm-2"))
    return home, spec, versions


@pytest.fixture
def setup(trained: tuple[Path, ModelSpec, list[ModelVersion]], tmp_path: Path) -> Setup:
    original, spec, versions = trained
    home = tmp_path / "home"
    # The registry's artifacts stay where they were written (MLflow stores absolute paths);
    # everything a check writes or changes is this test's own copy.
    shutil.copytree(original, home)
    return Setup(home, spec, versions)


def columns_by_name(report: DriftReport) -> dict[str, Any]:
    return {c.name: c for c in report.columns}


def test_unshifted_traffic_is_no_drift(setup: Setup) -> None:
    setup.capture(production_rows(3000, seed=1))
    report = setup.check()
    assert report.status is ReportStatus.OK, report.summary
    assert report.drifted == [] and report.score == 0 and report.severity is Severity.LOW
    assert report.rows == 3000 and report.reference_rows == 4000
    assert report.profile_version == "2"
    assert {c.role for c in report.columns} == set(ColumnRole)
    label = columns_by_name(report)[setup.spec.label]
    assert label.n_current == 0 and label.status is ColumnStatus.INSUFFICIENT_DATA  # none yet
    assert monitor_trigger(report) is None


def test_shifted_features_drift_and_the_report_is_written(setup: Setup) -> None:
    rows = shifted(production_rows(3000, seed=2), "salary", lambda v: v * 1.6)
    rows = shifted(rows, "age", lambda v: v + 15)
    setup.capture(rows)
    report = setup.check()
    columns = columns_by_name(report)
    assert report.status is ReportStatus.DRIFT
    assert {"salary", "age"} <= set(report.drifted)
    assert columns["hvalue"].status is ColumnStatus.OK
    # Age decides the champion's answers (Agrawal function 0): its outputs moved too.
    assert columns["score"].role is ColumnRole.PREDICTION
    assert columns["score"].status is ColumnStatus.DRIFTED
    assert report.severity in (Severity.HIGH, Severity.CRITICAL)
    assert columns["age"].ks_pvalue is not None and columns["age"].ks_pvalue < 1e-10
    stored = StoredReport.model_validate_json(Path(report.report_uri or "").read_text())
    assert stored.report == report and "age" in stored.histograms
    page = Path(report.html_uri or "").read_text()
    assert "salary" in page and "<svg" in page
    # Readable by whoever may read the home (a browser, another container), not 0600.
    for uri in (report.report_uri, report.html_uri):
        assert stat.S_IMODE(Path(uri or "").stat().st_mode) == FILE_MODE
    event = monitor_trigger(report)
    assert event is not None and event.kind is TriggerKind.DRIFT
    assert event.drift is not None and event.drift.html_uri == report.html_uri


def test_categorical_shift_and_unseen_categories(setup: Setup) -> None:
    rows = shifted(production_rows(3000, seed=3), "car", lambda v: np.where(v < 10, 25, v))
    setup.capture(rows)
    car = columns_by_name(setup.check())["car"]
    assert car.status is ColumnStatus.DRIFTED
    assert car.unseen_share is not None and car.unseen_share > 0.3
    assert car.chi2_pvalue is not None and car.chi2_pvalue < 1e-10
    assert car.cramers_v is not None and car.cramers_v > 0.3


def test_label_drift_from_feedback(setup: Setup) -> None:
    rows = production_rows(3000, seed=4)
    ids = setup.capture(rows)
    labels = np.zeros(3000)  # every applicant rejected: the label distribution collapsed
    write_feedback(setup.home, setup.spec, ids, labels, at=RECENT + timedelta(minutes=5))
    report = setup.check()
    label = columns_by_name(report)[setup.spec.label]
    assert label.role is ColumnRole.LABEL and label.n_current == 3000
    assert label.status is ColumnStatus.DRIFTED
    assert setup.spec.label in report.drifted


def test_only_the_window_and_no_shadow_copies_are_read(setup: Setup) -> None:
    setup.capture(production_rows(1000, seed=5))
    old = shifted(production_rows(1000, seed=6), "salary", lambda v: v * 3)
    setup.capture(old, at=NOW - timedelta(days=3))  # outside the 24 h window
    setup.capture(old, at=RECENT, shadow=True)  # shadow answers repeat live requests
    report = setup.check()
    assert report.rows == 1000
    assert report.status is ReportStatus.OK


def test_broken_columns_are_reported_per_column_and_alarm(setup: Setup) -> None:
    rows = production_rows(2000, seed=7)
    setup.capture(rows.slice(0, 1000))
    # A producer now sends age as text and stops sending loan; hvalue is all missing.
    baseline = pq.read_schema(resolve_uri(setup.home, setup.spec.data.baseline_holdout))
    schema = request_schema(setup.spec, baseline)
    schema = schema.set(schema.get_field_index("age"), pa.field("age", pa.string()))
    schema = schema.remove(schema.get_field_index("loan"))
    broken = rows.slice(1000).set_column(
        rows.schema.get_field_index("age"), "age", pa.array([str(a) for a in rows["age"][1000:]])
    )
    broken = shifted(broken, "hvalue", lambda v: np.full(len(v), np.nan))
    setup.capture(broken, schema=schema)
    report = setup.check()
    columns = columns_by_name(report)
    assert report.status is ReportStatus.DATA_QUALITY
    assert "type changed" in " ".join(columns["age"].issues)
    assert "missing from 1 of" in " ".join(columns["loan"].issues)
    assert columns["hvalue"].status is ColumnStatus.DATA_QUALITY
    assert "missing rate rose" in " ".join(columns["hvalue"].issues)
    assert columns["salary"].status is ColumnStatus.OK
    event = monitor_trigger(report)
    assert event is not None and event.kind is TriggerKind.ALARM


def test_an_empty_window_is_insufficient_data(setup: Setup) -> None:
    report = setup.check()
    assert report.status is ReportStatus.INSUFFICIENT_DATA and report.rows == 0
    assert monitor_trigger(report) is None


def test_a_feature_the_reference_lacks_is_a_data_quality_problem(setup: Setup) -> None:
    setup.capture(production_rows(1000, seed=8))
    baseline = resolve_uri(setup.home, setup.spec.data.baseline_holdout)
    table = pq.read_table(baseline)
    write_parquet_atomic(table.drop_columns(["hyears"]), baseline)
    report = setup.check()
    hyears = columns_by_name(report)["hyears"]
    assert hyears.status is ColumnStatus.DATA_QUALITY
    assert "not in the reference profile" in hyears.issues[0]
    assert report.status is ReportStatus.DATA_QUALITY
    # Without every feature the champion cannot be asked for reference predictions.
    assert all(c.role is not ColumnRole.PREDICTION for c in report.columns)


def test_the_profile_follows_the_champion_and_its_training_data(setup: Setup) -> None:
    setup.capture(production_rows(1000, seed=9))
    first = setup.check()
    assert first.profile_version == "2"
    # Version 1 came from loop 1; give it a training set of a different distribution.
    second = setup.versions[0]
    assert second.loop_id is not None
    training = shifted(production_rows(3000, seed=10), "salary", lambda v: v * 1.6)
    write_parquet_atomic(
        training, loop_data_dir(setup.home, setup.spec.name, second.loop_id) / "training.parquet"
    )
    setup.registry.promote(
        PromoteRequest(model=setup.spec.name, version=second.version, loop_id=second.loop_id)
    )
    setup.capture(shifted(production_rows(1000, seed=11), "salary", lambda v: v * 1.6))
    report = setup.check()
    assert report.profile_version == "1"
    assert report.profile_source is not None and report.profile_source.endswith("training.parquet")
    # Compared with what v2 learned from, half the window (the shifted half) is normal.
    keys = sorted(p.name for p in profiles_dir(setup.home, setup.spec.name).iterdir())
    assert [k.split("-")[0] for k in keys] == ["v1", "v2"]


def test_a_spec_change_builds_a_new_profile(setup: Setup) -> None:
    setup.capture(production_rows(1000, seed=12))
    setup.check()
    finer = with_changes(setup.spec, {"drift": {"bins": 20}})
    SpecStore(setup.home).register(finer)
    setup.check(finer)
    assert len(list(profiles_dir(setup.home, setup.spec.name).iterdir())) == 2
