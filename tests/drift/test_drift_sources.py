"""A model its cloud already monitors: the DriftMonitor's check reads Vertex Model Monitoring
(real SDK, the fake's monitoring job) and the report routes like our own checks do."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.drift.check import DriftActivities
from activities.gcp.monitoring import ModelMonitoringSource
from activities.local.registry import MlflowRegistry
from activities.specs import SpecStore
from tests.gcp.test_vertex_endpoint import clients_for
from tests.support.cloud_data import vertex_settings
from tests.support.loop_harness import with_changes, write_dataset
from tests.support.vertex_fake import endpoints, monitoring
from tests.support.vertex_fake.server import FakeState, RunningFake, serve
from workflows.coordinator.triggers import Severity, TriggerKind
from workflows.drift.models import DriftCheckInput, ReportStatus
from workflows.drift.rules import monitor_trigger
from workflows.spec.models import ModelSpec

ENDPOINT = "projects/retrain-tests/locations/us-central1/endpoints/555"
MODEL = "monitored"


@pytest.fixture
def fake() -> Iterator[RunningFake]:
    yield from serve(FakeState(), [endpoints.routes, monitoring.routes])


def registered(home: Path, job: str) -> ModelSpec:
    spec = with_changes(
        write_dataset(home, MODEL, date(2026, 3, 31)),
        {"backend": "vertex", "vertex": vertex_settings(monitoring_job=job)},
    )
    SpecStore(home).register(spec)
    return spec


def check(home: Path, fake: RunningFake, spec: ModelSpec) -> DriftActivities:
    assert spec.vertex is not None
    source = ModelMonitoringSource(clients_for(fake), spec.vertex)
    return DriftActivities(home, SpecStore(home), MlflowRegistry(home), platform=lambda _: source)


def test_the_platforms_anomalies_become_a_routed_drift_report(
    tmp_path: Path, fake: RunningFake
) -> None:
    job = monitoring.seed_monitoring_job(fake.state, "credit-monitor", ENDPOINT, ["111"])
    spec = registered(tmp_path, job)
    now = datetime.now(UTC)
    monitoring.seed_feature_stats(
        fake.state,
        job,
        "111",
        "RAW_FEATURE_DRIFT",
        "income",
        deviation=0.42,
        threshold=0.2,
        start=now - timedelta(hours=2),
        end=now - timedelta(hours=1),
    )
    request = DriftCheckInput(model=MODEL, check_id="drift-monitored-1", window_end=now)

    report = ActivityEnvironment().run(check(tmp_path, fake, spec).check, request)

    assert report.status is ReportStatus.DRIFT
    assert report.drifted == ["income"] and report.score == pytest.approx(0.42)
    # The model's own cut points (0.1 / 0.3 / 0.5): 0.42 is high.
    assert report.severity is Severity.HIGH
    assert report.endpoint == ENDPOINT
    assert "Vertex AI Model Monitoring" in report.summary
    trigger = monitor_trigger(report)
    assert trigger is not None and trigger.kind is TriggerKind.DRIFT
    assert trigger.drift is not None and trigger.drift.features == ["income"]


def test_no_statistics_yet_is_insufficient_data(tmp_path: Path, fake: RunningFake) -> None:
    job = monitoring.seed_monitoring_job(fake.state, "credit-monitor", ENDPOINT, ["111"])
    spec = registered(tmp_path, job)
    request = DriftCheckInput(
        model=MODEL, check_id="drift-monitored-2", window_end=datetime.now(UTC)
    )

    report = ActivityEnvironment().run(check(tmp_path, fake, spec).check, request)

    assert report.status is ReportStatus.INSUFFICIENT_DATA
    assert monitor_trigger(report) is None
