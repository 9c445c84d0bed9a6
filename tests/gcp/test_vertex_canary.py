"""CloudMonitoringCanary against the fake's Cloud Monitoring: Vertex's own metrics seeded in the
fake, our quality metrics written through the real monitoring client, judged by the verdict."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from activities.gcp.canary import CloudMonitoringCanary, publish_quality
from activities.gcp.endpoint import (
    VertexEndpoint,
    deployed_variants,
    find_endpoint,
)
from tests.gcp.test_vertex_endpoint import MODEL, change, clients_for, settings_for
from tests.support.vertex_fake import endpoints, monitoring
from tests.support.vertex_fake.server import FakeState, RunningFake, serve
from workflows.rollout.models import CanaryPolicy, CanaryRequest, CheckName, Outcome, WindowRef
from workflows.rollout.rules import canary_verdict

POLICY = CanaryPolicy()
REQUESTS = 2000


@pytest.fixture
def fake() -> Iterator[RunningFake]:
    yield from serve(FakeState(), [endpoints.routes, monitoring.routes])


@pytest.fixture
def deployed(fake: RunningFake) -> dict[str, str]:
    """v1 and v2 deployed at 50/50; variant -> deployed model id."""
    settings = settings_for(fake)
    endpoint = VertexEndpoint(
        clients_for(fake), settings, lambda m, v: f"projects/p/locations/l/models/{m}@{v}"
    )
    endpoint.set_traffic(change({"v1": 100}, "initial"))
    endpoint.set_traffic(change({"v1": 50, "v2": 50}, "stage-1"))
    found = find_endpoint(clients_for(fake).endpoints, settings)
    assert found is not None
    fake.state.tables["endpoint_id"] = {"id": found.name.rsplit("/", 1)[-1]}
    return deployed_variants(found)


def traffic(
    fake: RunningFake,
    deployed: dict[str, str],
    variant: str,
    *,
    error_rate: float = 0.01,
    latency_ms: float = 20.0,
    accuracy: float = 0.85,
    seed: int,
) -> None:
    """Two minutes of a variant's traffic, half of it labelled."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    endpoint_id = fake.state.tables["endpoint_id"]["id"]
    for minute in (2, 1):
        n = REQUESTS // 2
        monitoring.seed_prediction_metrics(
            fake.state,
            endpoint_id,
            deployed[variant],
            now - timedelta(minutes=minute),
            requests=n,
            errors=int(rng.binomial(n, error_rate)),
            latencies_ms=list(rng.lognormal(math.log(latency_ms), 0.3, n)),
        )
        labels = rng.random(n // 2) < 0.3
        right = rng.random(n // 2) < accuracy
        scores = np.where(
            labels == right, rng.uniform(0.55, 0.95, n // 2), rng.uniform(0.05, 0.45, n // 2)
        )
        probability = np.where(labels, scores, 1 - scores)
        publish_quality(
            clients_for(fake),
            settings_for(fake),
            "churn-endpoint",
            variant,
            labelled=n // 2,
            correct=int(right.sum()),
            log_losses=list(-np.log(probability)),
            scores=list(scores),
            when=now - timedelta(minutes=minute),
        )


def analyse(fake: RunningFake) -> CanaryRequest:
    since = datetime.now(UTC) - timedelta(minutes=5)
    return CanaryRequest(
        model=MODEL,
        endpoint_url="http://unused",
        capture_dir="/unused",
        champion=WindowRef(variant="v1", generation=2, since=since),
        challenger=WindowRef(variant="v2", generation=2, since=since),
        policy=POLICY,
        seed=7,
    )


def test_a_healthy_challenger_passes(fake: RunningFake, deployed: dict[str, str]) -> None:
    traffic(fake, deployed, "v1", seed=1)
    traffic(fake, deployed, "v2", seed=2)
    beats: list[str] = []
    stats = CloudMonitoringCanary(clients_for(fake), settings_for(fake)).analyse(
        analyse(fake), beats.append
    )
    assert beats
    assert stats.champion.requests == REQUESTS and stats.challenger.requests == REQUESTS
    assert stats.challenger.labelled == REQUESTS // 2
    assert stats.champion.latency_p50_ms == pytest.approx(20, rel=0.15)
    assert stats.champion.accuracy == pytest.approx(0.85, abs=0.04)
    verdict = canary_verdict(stats, POLICY, min_requests=200)
    assert verdict.outcome is Outcome.PASS, verdict.summary


@pytest.mark.parametrize(
    ("bad", "failing"),
    [
        ({"error_rate": 0.08}, CheckName.ERROR_RATE),
        ({"latency_ms": 60.0}, CheckName.LATENCY_P50),
        ({"accuracy": 0.7}, CheckName.ACCURACY),
    ],
)
def test_a_bad_challenger_fails(
    fake: RunningFake, deployed: dict[str, str], bad: dict[str, float], failing: CheckName
) -> None:
    traffic(fake, deployed, "v1", seed=1)
    traffic(fake, deployed, "v2", seed=2, **bad)
    stats = CloudMonitoringCanary(clients_for(fake), settings_for(fake)).analyse(
        analyse(fake), print
    )
    verdict = canary_verdict(stats, POLICY, min_requests=200)
    assert verdict.outcome is Outcome.FAIL, verdict.summary
    assert failing in {check.name for check in verdict.checks if check.outcome is Outcome.FAIL}


def test_traffic_before_the_window_is_not_counted(
    fake: RunningFake, deployed: dict[str, str]
) -> None:
    traffic(fake, deployed, "v1", seed=1)
    traffic(fake, deployed, "v2", seed=2)
    request = analyse(fake)
    later = datetime.now(UTC) - timedelta(seconds=90)
    request = request.model_copy(
        update={"challenger": WindowRef(variant="v2", generation=2, since=later)}
    )
    stats = CloudMonitoringCanary(clients_for(fake), settings_for(fake)).analyse(request, print)
    assert stats.challenger.requests == REQUESTS // 2
    assert stats.champion.requests == REQUESTS
