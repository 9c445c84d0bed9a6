"""ModelMonitoringSource against the fake's ModelDeploymentMonitoringJob results (real SDK,
REST transport): no statistics -> no signal; anomalies -> the right features and score."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import ApplicationError

from activities.gcp.monitoring import ModelMonitoringSource
from tests.gcp.test_vertex_endpoint import clients_for, settings_for
from tests.support.vertex_fake import endpoints, monitoring
from tests.support.vertex_fake.server import FakeState, RunningFake, serve
from workflows.common.errors import ErrorType

ENDPOINT = "projects/retrain-tests/locations/us-central1/endpoints/555"


@pytest.fixture
def fake() -> Iterator[RunningFake]:
    yield from serve(FakeState(), [endpoints.routes, monitoring.routes])


def source(fake: RunningFake, job: str | None = "churn-monitor") -> ModelMonitoringSource:
    settings = settings_for(fake).model_copy(update={"monitoring_job": job})
    return ModelMonitoringSource(clients_for(fake), settings)


def test_no_statistics_is_no_signal(fake: RunningFake) -> None:
    monitoring.seed_monitoring_job(fake.state, "churn-monitor", ENDPOINT, ["111"])
    assert source(fake).latest("churn", datetime.now(UTC) - timedelta(days=1)) is None


def test_anomalies_make_a_signal(fake: RunningFake) -> None:
    job = monitoring.seed_monitoring_job(fake.state, "churn-monitor", ENDPOINT, ["111", "222"])
    now = datetime.now(UTC)
    hour_ago, old = now - timedelta(hours=1), now - timedelta(days=3)

    def seed(model: str, objective: str, feature: str, deviation: float, start: datetime) -> None:
        monitoring.seed_feature_stats(
            fake.state,
            job,
            model,
            objective,
            feature,
            deviation=deviation,
            threshold=0.3,
            start=start,
            end=start + timedelta(minutes=30),
        )

    seed("111", "RAW_FEATURE_DRIFT", "tenure", 0.45, hour_ago)
    seed("111", "RAW_FEATURE_DRIFT", "plan", 0.1, hour_ago)
    seed("222", "RAW_FEATURE_SKEW", "region", 0.31, hour_ago)
    # Before the window asked for: ignored, however large.
    seed("111", "RAW_FEATURE_DRIFT", "age", 0.9, old)
    # Another objective than drift/skew: not read.
    seed("111", "FEATURE_ATTRIBUTION_DRIFT", "charges", 0.8, hour_ago)

    signal = source(fake, job).latest("churn", now - timedelta(days=1))
    assert signal is not None
    assert signal.score == pytest.approx(0.45)
    assert signal.features == ["region", "tenure"]
    assert signal.endpoint == ENDPOINT
    assert signal.window_start == hour_ago
    assert signal.window_end == hour_ago + timedelta(minutes=30)


def test_below_threshold_is_a_signal_without_features(fake: RunningFake) -> None:
    job = monitoring.seed_monitoring_job(fake.state, "churn-monitor", ENDPOINT, ["111"])
    now = datetime.now(UTC)
    monitoring.seed_feature_stats(
        fake.state,
        job,
        "111",
        "RAW_FEATURE_DRIFT",
        "tenure",
        deviation=0.1,
        threshold=0.3,
        start=now - timedelta(hours=1),
        end=now,
    )
    signal = source(fake).latest("churn", now - timedelta(days=1))
    assert signal is not None and signal.features == [] and signal.score == pytest.approx(0.1)


def test_a_missing_job_is_not_retryable(fake: RunningFake) -> None:
    with pytest.raises(ApplicationError) as caught:
        source(fake, "nope").latest("churn", datetime.now(UTC))
    assert caught.value.type == ErrorType.GCP_REQUEST_REJECTED and caught.value.non_retryable
    with pytest.raises(ApplicationError, match="no Vertex monitoring_job"):
        source(fake, None).latest("churn", datetime.now(UTC))
