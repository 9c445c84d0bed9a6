"""CloudWatchCanary on moto (metrics published as SageMaker and a feedback joiner would), and
botocore's Stubber for the latency percentiles moto does not compute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from botocore.stub import ANY, Stubber
from temporalio.exceptions import ApplicationError

from activities.aws.canary import CloudWatchCanary, publish_quality
from activities.aws.clients import AwsClients
from tests.support.aws_harness import REGION, ROLE_ARN, Moto
from workflows.rollout.models import CanaryPolicy, CanaryRequest, CheckName, Outcome, WindowRef
from workflows.rollout.rules import canary_verdict
from workflows.spec.sagemaker import SageMakerSettings

ENDPOINT = "churn-endpoint"
SETTINGS = SageMakerSettings(
    region=REGION,
    role_arn=ROLE_ARN,
    bucket="retrain-test",
    training_image="123.dkr.ecr.us-east-1.amazonaws.com/train:1",
    endpoint_name=ENDPOINT,
    inference_image="123.dkr.ecr.us-east-1.amazonaws.com/serve:1",
)
POLICY = CanaryPolicy()


def request(since: datetime, shadow: bool = False) -> CanaryRequest:
    return CanaryRequest(
        model="churn",
        endpoint_url="http://unused",
        capture_dir="/unused",
        champion=WindowRef(variant="v1", generation=3, since=since),
        challenger=WindowRef(variant="v2", generation=3, since=since, shadow=shadow),
        policy=POLICY,
        seed=7,
    )


def publish_traffic(
    clients: AwsClients,
    variant: str,
    rng: np.random.Generator,
    *,
    invocations: int,
    errors: int,
    latency_ms: float,
    accuracy: float,
    score_shift: float = 0.0,
) -> None:
    """What SageMaker publishes for a variant, and a feedback joiner's quality batch."""
    at = datetime.now(UTC) - timedelta(seconds=30)
    dimensions = [
        {"Name": "EndpointName", "Value": ENDPOINT},
        {"Name": "VariantName", "Value": variant},
    ]
    latencies = rng.gamma(4.0, latency_ms * 1000 / 4.0, size=50)  # microseconds
    data: list[dict[str, Any]] = [
        {"MetricName": "Invocations", "Value": float(invocations)},
        {"MetricName": "Invocation4XXErrors", "Value": 1.0},
        {"MetricName": "Invocation5XXErrors", "Value": float(errors)},
        *({"MetricName": "ModelLatency", "Value": float(value)} for value in latencies),
    ]
    clients.cloudwatch.put_metric_data(
        Namespace="AWS/SageMaker",
        MetricData=[{**datum, "Dimensions": dimensions, "Timestamp": at} for datum in data],
    )
    labelled = 400
    truth = rng.random(labelled) < 0.5
    right = rng.random(labelled) < accuracy
    scores = np.clip(
        np.where(truth == right, 0.7, 0.3) + rng.normal(score_shift, 0.1, labelled), 0, 1
    )
    probability = np.clip(scores, 1e-15, 1 - 1e-15)
    losses = -np.where(truth, np.log(probability), np.log1p(-probability))
    all_scores = np.clip(rng.beta(2, 3, size=invocations - errors) + score_shift, 0, 1)
    publish_quality(
        clients,
        SETTINGS,
        ENDPOINT,
        variant,
        labelled=labelled,
        correct=int(right.sum()),
        log_losses=[float(loss) for loss in losses],
        scores=[float(score) for score in all_scores],
        timestamp=at,
    )


def test_healthy_challenger_passes(moto: Moto) -> None:
    clients, rng = moto.clients(), np.random.default_rng(1)
    since = datetime.now(UTC) - timedelta(minutes=10)
    publish_traffic(clients, "v1", rng, invocations=1000, errors=2, latency_ms=20, accuracy=0.85)
    publish_traffic(clients, "v2", rng, invocations=980, errors=3, latency_ms=21, accuracy=0.86)
    beats: list[str] = []
    stats = CloudWatchCanary(clients, SETTINGS).analyse(request(since), beats.append)
    assert len(beats) == 2
    assert stats.champion.requests == 1000 and stats.challenger.requests == 980
    assert stats.champion.errors == 2 and stats.challenger.labelled == 400
    checks = {check.name: check for check in stats.checks}
    p50 = checks[CheckName.LATENCY_P50]
    assert p50.p_value is None and "mean ModelLatency" in p50.detail and "no p50" in p50.detail
    assert 15 < (p50.champion or 0) < 25  # microseconds became milliseconds
    assert checks[CheckName.PREDICTION_SHIFT].difference is not None
    assert checks[CheckName.LOG_LOSS].p_value is not None
    verdict = canary_verdict(stats, POLICY, min_requests=200)
    assert verdict.outcome is Outcome.PASS, verdict.summary


def test_bad_challenger_fails(moto: Moto) -> None:
    clients, rng = moto.clients(), np.random.default_rng(2)
    since = datetime.now(UTC) - timedelta(minutes=10)
    publish_traffic(clients, "v1", rng, invocations=1000, errors=2, latency_ms=20, accuracy=0.85)
    publish_traffic(
        clients,
        "v2",
        rng,
        invocations=1000,
        errors=80,
        latency_ms=20,
        accuracy=0.6,
        score_shift=0.3,
    )
    stats = CloudWatchCanary(clients, SETTINGS).analyse(request(since, shadow=True), lambda _: None)
    assert stats.shadow
    verdict = canary_verdict(stats, POLICY, min_requests=200)
    assert verdict.outcome is Outcome.FAIL
    failed = {check.name for check in verdict.checks if check.outcome is Outcome.FAIL}
    assert {CheckName.ERROR_RATE, CheckName.ACCURACY, CheckName.PREDICTION_SHIFT} <= failed


def test_no_traffic_is_inconclusive(moto: Moto) -> None:
    since = datetime.now(UTC) - timedelta(minutes=5)
    stats = CloudWatchCanary(moto.clients(), SETTINGS).analyse(request(since), lambda _: None)
    verdict = canary_verdict(stats, POLICY, min_requests=200)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert stats.champion.requests == 0


# ---- Stubber: percentiles (real CloudWatch), errors ----------------------------------------


def stubbed_metrics(stub: Stubber, latency: tuple[float, float] | None) -> None:
    """One variant's GetMetricData (1000 invocations, nothing else) and its percentiles."""
    stub.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                {
                    "Id": "m0",
                    "Label": "Invocations",
                    "Values": [600.0, 400.0],
                    "StatusCode": "Complete",
                }
            ]
        },
        {"MetricDataQueries": ANY, "StartTime": ANY, "EndTime": ANY},
    )
    datapoints = []
    if latency is not None:
        at = datetime(2026, 1, 1, tzinfo=UTC)
        datapoints = [
            {"Timestamp": at, "ExtendedStatistics": {"p50": latency[0], "p99": latency[1]}}
        ]
    stub.add_response(
        "get_metric_statistics",
        {"Label": "ModelLatency", "Datapoints": datapoints},
        {
            "Namespace": "AWS/SageMaker",
            "MetricName": "ModelLatency",
            "Dimensions": ANY,
            "StartTime": ANY,
            "EndTime": ANY,
            "Period": ANY,
            "ExtendedStatistics": ["p50", "p99"],
        },
    )


def test_latency_percentiles_from_extended_statistics() -> None:
    clients = AwsClients(REGION, endpoint_url="http://127.0.0.1:1")
    stub = Stubber(clients.cloudwatch)
    stubbed_metrics(stub, (20_000.0, 90_000.0))  # microseconds
    stubbed_metrics(stub, (22_000.0, 270_000.0))
    since = datetime.now(UTC) - timedelta(minutes=10)
    with stub:
        stats = CloudWatchCanary(clients, SETTINGS).analyse(request(since), lambda _: None)
    stub.assert_no_pending_responses()
    assert stats.champion.requests == 1000
    assert stats.champion.latency_p50_ms == 20.0 and stats.challenger.latency_p99_ms == 270.0
    checks = {check.name: check for check in stats.checks}
    assert checks[CheckName.LATENCY_P99].difference == pytest.approx(3.0)
    assert "CloudWatch p99" in checks[CheckName.LATENCY_P99].detail
    verdict = canary_verdict(stats, POLICY, min_requests=200)
    results = {check.name: check.outcome for check in verdict.checks}
    assert results[CheckName.LATENCY_P99] is Outcome.FAIL
    assert results[CheckName.LATENCY_P50] is Outcome.PASS


@pytest.mark.parametrize(("code", "retryable"), [("AccessDenied", False), ("Throttling", True)])
def test_cloudwatch_errors(code: str, retryable: bool) -> None:
    clients = AwsClients(REGION, endpoint_url="http://127.0.0.1:1")
    stub = Stubber(clients.cloudwatch)
    stub.add_client_error("get_metric_data", code, "no cloudwatch:GetMetricData for you")
    since = datetime.now(UTC) - timedelta(minutes=10)
    with stub, pytest.raises(ApplicationError) as raised:
        CloudWatchCanary(clients, SETTINGS).analyse(request(since), lambda _: None)
    assert raised.value.non_retryable is not retryable
    assert "GetMetricData" in str(raised.value)
