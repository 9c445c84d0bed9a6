"""SageMakerEndpoint against moto (with the UpdateEndpoint shim of tests/support/moto_gaps.py), and
botocore's Stubber for the exact UpdateEndpoint request and the error paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY, Stubber
from temporalio.exceptions import ApplicationError

from activities.aws.autoscaling import VariantAutoscaling, resource_id
from activities.aws.endpoint import SageMakerEndpoint, percentages
from activities.ports import EndpointUnavailable, TrafficRefused
from activities.scaling import ScalingLog
from tests.support.aws_harness import ACCOUNT, REGION, ROLE_ARN, Moto
from tests.support.moto_gaps import record_scaling_activity, set_endpoint_status
from workflows.rollout.models import EndpointState, ScalingEvent, TrafficChange
from workflows.spec.sagemaker import SageMakerSettings

ENDPOINT = "churn-endpoint"


def settings(**overrides: Any) -> SageMakerSettings:
    values: dict[str, Any] = {
        "region": REGION,
        "role_arn": ROLE_ARN,
        "bucket": "retrain-test",
        "training_image": "123.dkr.ecr.us-east-1.amazonaws.com/train:1",
        "endpoint_name": ENDPOINT,
        "inference_image": "123.dkr.ecr.us-east-1.amazonaws.com/serve:1",
        "tags": {"team": "growth"},
    }
    return SageMakerSettings.model_validate(values | overrides)


def package(model: str, version: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{model}/{version}"


def change(weights: dict[str, int], change_id: str, shadow: str | None = None) -> TrafficChange:
    return TrafficChange(
        model="churn",
        endpoint_url="http://unused",
        weights=weights,
        shadow=shadow,
        change_id=change_id,
    )


def apply(endpoint: SageMakerEndpoint, traffic: TrafficChange) -> tuple[EndpointState, int]:
    """set_traffic retried on EndpointUnavailable as Temporal would; the attempts it took."""
    for attempt in range(1, 4):
        try:
            return endpoint.set_traffic(traffic), attempt
        except EndpointUnavailable:
            continue
    raise AssertionError("the endpoint never became available")


@pytest.fixture
def logged() -> list[str]:
    return []


@pytest.fixture
def endpoint(moto: Moto, moto_gaps: None, logged: list[str]) -> SageMakerEndpoint:
    clients = moto.clients()
    config = settings()
    assert config.autoscaling is not None
    scaling = VariantAutoscaling(clients, config.autoscaling, logged.append)
    return SageMakerEndpoint(clients, config, scaling, package)


def test_percentages_sum_to_100() -> None:
    assert percentages({"v1": 1.0, "v2": 1.0, "v3": 1.0}) == {"v1": 34, "v2": 33, "v3": 33}
    assert percentages({"v1": 0.95, "v2": 0.05}) == {"v1": 95, "v2": 5}
    assert percentages({"v1": 0.0, "v2": 0.0}) == {"v1": 0, "v2": 0}


def test_rollout_end_to_end(endpoint: SageMakerEndpoint, moto: Moto) -> None:
    sagemaker = endpoint.clients.sagemaker
    state, attempts = apply(endpoint, change({"v1": 100}, "r/0-create"))
    assert attempts == 2  # created, then InService
    assert state.weights == {"v1": 100} and state.generation == 1
    assert state.change_id == "r/0-create" and state.variants == {"v1": "1"}
    assert state.updated_at.tzinfo is not None

    state, attempts = apply(endpoint, change({"v1": 100}, "r/1-shadow", shadow="v2"))
    assert attempts == 2  # UpdateEndpoint, then the weights
    assert state.shadow == "v2" and state.weights == {"v1": 100} and state.generation == 2
    assert state.variants == {"v1": "1", "v2": "2"}

    expected_generation = 2
    for step, weight in enumerate((5, 25, 50, 100), start=2):
        split = {"v1": 100 - weight, "v2": weight}
        state, _ = apply(endpoint, change(split, f"r/{step}-{weight}%"))
        expected_generation += 1
        assert state.shadow is None
        assert {k: v for k, v in state.weights.items() if v} == {
            k: v for k, v in split.items() if v
        }
        assert state.generation == expected_generation
        assert endpoint.read_traffic("churn", "http://unused") == state

    described = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    counts = {v["VariantName"]: v["CurrentInstanceCount"] for v in described["ProductionVariants"]}
    assert counts == {"v1": 1, "v2": 1}  # weight changes moved no instance
    model = sagemaker.describe_model(ModelName=f"{ENDPOINT}-v2")
    assert model["Containers"][0]["ModelPackageName"] == package("churn", "2")
    assert model["ExecutionRoleArn"] == ROLE_ARN

    state, attempts = apply(endpoint, change({"v1": 100}, "r/6-rollback"))
    assert attempts == 1  # v1 is still on the endpoint: a weight change only
    assert state.weights == {"v1": 100, "v2": 0} and state.generation == 7

    again, _ = apply(endpoint, change({"v1": 100}, "r/6-rollback"))
    assert again.generation == 7 and again.change_id == "r/6-rollback"
    configs = sagemaker.list_endpoint_configs()["EndpointConfigs"]
    assert len(configs) == 3  # create, shadow, promote shadow to live: one per layout change

    targets = endpoint.clients.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")
    assert {t["ResourceId"] for t in targets["ScalableTargets"]} == {
        f"endpoint/{ENDPOINT}/variant/v1",
        f"endpoint/{ENDPOINT}/variant/v2",
    }


def test_a_new_variant_retires_unrequested_idle_ones(endpoint: SageMakerEndpoint) -> None:
    apply(endpoint, change({"v1": 100}, "a/0"))
    apply(endpoint, change({"v1": 50, "v2": 50}, "a/1"))
    apply(endpoint, change({"v2": 100}, "a/2"))
    state, _ = apply(endpoint, change({"v2": 95, "v3": 5}, "a/3"))
    assert state.weights == {"v2": 95, "v3": 5}
    targets = endpoint.clients.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")
    assert {t["ResourceId"].rsplit("/", 1)[1] for t in targets["ScalableTargets"]} == {"v2", "v3"}


def test_endpoint_not_in_service_waits_or_refuses(endpoint: SageMakerEndpoint) -> None:
    apply(endpoint, change({"v1": 100}, "s/0"))
    set_endpoint_status(ENDPOINT, "Updating")
    with pytest.raises(EndpointUnavailable, match="Updating"):
        endpoint.set_traffic(change({"v1": 100}, "s/1"))
    # A change already applied but not settled yet: its read-back waits too.
    with pytest.raises(EndpointUnavailable, match="Updating"):
        endpoint.set_traffic(change({"v1": 100}, "s/0"))
    with pytest.raises(EndpointUnavailable, match="Updating"):
        endpoint.read_traffic("churn", "http://unused")
    set_endpoint_status(ENDPOINT, "Failed", "the image could not be pulled")
    with pytest.raises(TrafficRefused, match="Failed: the image could not be pulled"):
        endpoint.set_traffic(change({"v1": 100}, "s/1"))


def test_endpoint_of_another_model_is_refused(endpoint: SageMakerEndpoint) -> None:
    apply(endpoint, change({"v1": 100}, "o/0"))
    other = change({"v1": 100}, "o/1").model_copy(update={"model": "fraud"})
    with pytest.raises(TrafficRefused, match="serves model 'churn', not 'fraud'"):
        endpoint.set_traffic(other)
    with pytest.raises(TrafficRefused, match="not 'fraud'"):
        endpoint.read_traffic("fraud", "http://unused")


# ---- Stubber: what moto cannot show ----------------------------------------------------------

ENDPOINT_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{ENDPOINT}"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def stubbed() -> tuple[SageMakerEndpoint, Stubber]:
    from activities.aws.clients import AwsClients

    clients = AwsClients(REGION, endpoint_url="http://127.0.0.1:1")
    stub = Stubber(clients.sagemaker)
    return SageMakerEndpoint(clients, settings(), None, package), stub


def test_update_endpoint_request() -> None:
    """A new variant: its model, a config with the live variant as it runs and the new one at
    0, and UpdateEndpoint not retaining the old config's properties (moto lacks UpdateEndpoint)."""
    backend, stub = stubbed()
    live = {"VariantName": "v1", "CurrentWeight": 1.0, "CurrentInstanceCount": 3}
    stub.add_response(
        "describe_endpoint",
        {
            "EndpointName": ENDPOINT,
            "EndpointArn": ENDPOINT_ARN,
            "EndpointConfigName": f"{ENDPOINT}-old",
            "EndpointStatus": "InService",
            "ProductionVariants": [live],
            "CreationTime": NOW,
            "LastModifiedTime": NOW,
        },
        {"EndpointName": ENDPOINT},
    )
    stub.add_response(
        "list_tags",
        {"Tags": [{"Key": "retrain:model", "Value": "churn"}]},
        {"ResourceArn": ENDPOINT_ARN},
    )
    stub.add_response(
        "describe_endpoint_config",
        {
            "EndpointConfigName": f"{ENDPOINT}-old",
            "EndpointConfigArn": f"{ENDPOINT_ARN}-config",
            "CreationTime": NOW,
            "ProductionVariants": [
                {
                    "VariantName": "v1",
                    "ModelName": f"{ENDPOINT}-v1",
                    "InstanceType": "ml.c5.xlarge",
                    "InitialInstanceCount": 1,
                    "InitialVariantWeight": 1.0,
                }
            ],
        },
        {"EndpointConfigName": f"{ENDPOINT}-old"},
    )
    stub.add_client_error(
        "describe_model",
        "ValidationException",
        f'Could not find model "{ENDPOINT}-v2".',
        expected_params={"ModelName": f"{ENDPOINT}-v2"},
    )
    tags = [{"Key": "retrain:model", "Value": "churn"}, {"Key": "team", "Value": "growth"}]
    stub.add_response(
        "create_model",
        {"ModelArn": f"{ENDPOINT_ARN}-model-v2"},
        {
            "ModelName": f"{ENDPOINT}-v2",
            "Containers": [{"ModelPackageName": package("churn", "2")}],
            "ExecutionRoleArn": ROLE_ARN,
            "Tags": tags,
        },
    )
    stub.add_client_error(
        "describe_endpoint_config", "ValidationException", "Could not find endpoint configuration"
    )
    stub.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": f"{ENDPOINT_ARN}-config-new"},
        {
            "EndpointConfigName": ANY,
            "ProductionVariants": [
                {
                    "VariantName": "v1",
                    "ModelName": f"{ENDPOINT}-v1",
                    "InstanceType": "ml.c5.xlarge",
                    "InitialInstanceCount": 3,  # what it runs now, autoscaled
                    "InitialVariantWeight": 1.0,
                },
                {
                    "VariantName": "v2",
                    "ModelName": f"{ENDPOINT}-v2",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                    "InitialVariantWeight": 0.0,
                },
            ],
            "Tags": tags,
            # Capture on every config: a rollout never switches it off.
            "DataCaptureConfig": {
                "EnableCapture": True,
                "InitialSamplingPercentage": 100,
                "DestinationS3Uri": f"s3://{settings().bucket}/{settings().prefix}/capture",
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": {
                    "CsvContentTypes": ["text/csv"],
                    "JsonContentTypes": ["application/json"],
                },
            },
        },
    )
    stub.add_response(
        "update_endpoint",
        {"EndpointArn": ENDPOINT_ARN},
        {"EndpointName": ENDPOINT, "EndpointConfigName": ANY, "RetainAllVariantProperties": False},
    )
    with stub, pytest.raises(EndpointUnavailable, match="being updated"):
        backend.set_traffic(change({"v1": 95, "v2": 5}, "u/1"))
    stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [("AccessDeniedException", 400, False), ("ThrottlingException", 400, True), ("x", 503, True)],
)
def test_aws_errors(code: str, status: int, retryable: bool) -> None:
    backend, stub = stubbed()
    stub.add_client_error("describe_endpoint", code, "not allowed here", http_status_code=status)
    with stub, pytest.raises(ApplicationError) as raised:
        backend.set_traffic(change({"v1": 100}, "e/1"))
    assert raised.value.non_retryable is not retryable
    assert "DescribeEndpoint" in str(raised.value) and "not allowed here" in str(raised.value)


class AskedScaler(VariantAutoscaling):
    """The real scaler, remembering which variants' activities each shift asked for."""

    asked: list[str]

    def events(self, model: str, endpoint: str, variant: str) -> list[ScalingEvent]:
        self.asked.append(variant)
        return super().events(model, endpoint, variant)


def test_each_shift_logs_the_live_variants_scaling_activities(
    moto: Moto,
    moto_gaps: None,
) -> None:
    clients = moto.clients()
    config = settings()
    assert config.autoscaling is not None
    scaler = AskedScaler(clients, config.autoscaling, lambda _: None)
    scaler.asked = []
    endpoint = SageMakerEndpoint(clients, config, scaler, package)
    apply(endpoint, change({"v1": 100}, "rollout-x/initial"))
    apply(endpoint, change({"v1": 95, "v2": 5}, "rollout-x/5%"))
    assert scaler.asked == ["v1", "v1", "v2"]


def test_the_scalers_activities_are_recorded_once_with_their_capacity(
    moto: Moto, moto_gaps: None, tmp_path: Path
) -> None:
    """What Application Auto Scaling did on a live variant (a target-tracking scale-out, a
    scheduled action) is in the scaling log once, however many shifts read it."""
    clients = moto.clients()
    config = settings()
    assert config.autoscaling is not None
    log = ScalingLog(tmp_path)
    endpoint = SageMakerEndpoint(
        clients,
        config,
        VariantAutoscaling(clients, config.autoscaling, lambda _: None),
        package,
        log,
    )
    apply(endpoint, change({"v1": 100}, "rollout-x/initial"))
    at = datetime.now(UTC).replace(microsecond=0)
    target = resource_id(ENDPOINT, "v1")
    record_scaling_activity(
        target,
        {
            "ActivityId": "act-1",
            "Description": "Setting desired instance count to 3.",
            "Cause": "monitor alarm TargetTracking-endpoint/churn-endpoint/variant/v1 in state "
            "ALARM triggered policy churn-endpoint-v1-invocations",
            "StartTime": at,
            "StatusCode": "Successful",
        },
    )
    record_scaling_activity(
        target,
        {
            "ActivityId": "act-2",
            "Description": "Setting min capacity to 3 and max capacity to 8",
            "Cause": "scheduled action name weekday-peak was triggered",
            "StartTime": at + timedelta(minutes=1),
            "StatusCode": "Successful",
        },
    )
    apply(endpoint, change({"v1": 95, "v2": 5}, "rollout-x/5%"))
    apply(endpoint, change({"v1": 75, "v2": 25}, "rollout-x/25%"))

    events = log.read("churn")
    assert [(e.event_id, e.kind, e.desired, e.variant) for e in events] == [
        ("act-1", "policy", 3, "v1"),
        ("act-2", "scheduled", None, "v1"),
    ]
    assert all(e.backend == "sagemaker" and e.endpoint == ENDPOINT for e in events)
    assert log.read("churn", since=at + timedelta(seconds=30)) == events[1:]
