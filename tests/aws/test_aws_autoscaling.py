"""VariantAutoscaling on moto's Application Auto Scaling; botocore's Stubber for
DescribeScalingActivities (moto lacks it) and the error paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.stub import Stubber
from temporalio.exceptions import ApplicationError

from activities.aws.autoscaling import DIMENSION, VariantAutoscaling, resource_id
from activities.aws.clients import AwsClients
from tests.support.aws_harness import REGION, Moto
from workflows.spec.common import ScheduledScaling
from workflows.spec.sagemaker import AwsAutoscaling

SETTINGS = AwsAutoscaling(
    min_capacity=1,
    max_capacity=6,
    invocations_per_instance=750.0,
    cpu_utilization=70.0,
    scale_in_cooldown=timedelta(minutes=10),
    scheduled=[
        ScheduledScaling(
            name="weekday-peak", schedule="cron(0 8 ? * MON-FRI *)", min_capacity=3, max_capacity=6
        )
    ],
)
TARGET = resource_id("churn-endpoint", "v2")


def test_prepare_is_idempotent(moto: Moto) -> None:
    clients, logged = moto.clients(), list[str]()
    scaling = VariantAutoscaling(clients, SETTINGS, logged.append)
    scaling.prepare("churn-endpoint", "v2")
    scaling.prepare("churn-endpoint", "v2")  # a retried activity
    client = clients.autoscaling
    targets = client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [
        (TARGET, 1, 6)
    ]
    assert targets[0]["ScalableDimension"] == DIMENSION
    policies = client.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    by_name = {p["PolicyName"]: p["TargetTrackingScalingPolicyConfiguration"] for p in policies}
    assert set(by_name) == {"churn-endpoint-v2-invocations", "churn-endpoint-v2-cpu"}
    invocations = by_name["churn-endpoint-v2-invocations"]
    assert invocations["TargetValue"] == 750.0 and invocations["ScaleInCooldown"] == 600
    assert (
        invocations["PredefinedMetricSpecification"]["PredefinedMetricType"]
        == "SageMakerVariantInvocationsPerInstance"
    )
    cpu = by_name["churn-endpoint-v2-cpu"]["CustomizedMetricSpecification"]
    assert cpu["MetricName"] == "CPUUtilization" and cpu["Namespace"] == "/aws/sagemaker/Endpoints"
    actions = client.describe_scheduled_actions(ServiceNamespace="sagemaker")["ScheduledActions"]
    assert [
        (a["ScheduledActionName"], a["ScalableTargetAction"]["MinCapacity"]) for a in actions
    ] == [("weekday-peak", 3)]
    assert any("1..6 instances" in line for line in logged)


def test_retire_deregisters_and_tolerates_missing(moto: Moto) -> None:
    clients = moto.clients()
    scaling = VariantAutoscaling(clients, AwsAutoscaling(), lambda _: None)
    scaling.prepare("churn-endpoint", "v2")
    scaling.retire("churn-endpoint", "v2")
    scaling.retire("churn-endpoint", "v2")  # already gone: fine
    targets = clients.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")
    assert targets["ScalableTargets"] == []


def test_recent_events_are_logged() -> None:
    clients, logged = AwsClients(REGION, endpoint_url="http://127.0.0.1:1"), list[str]()
    stub = Stubber(clients.autoscaling)
    at = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    stub.add_response(
        "describe_scaling_activities",
        {
            "ScalingActivities": [
                {
                    "ActivityId": "a1",
                    "ServiceNamespace": "sagemaker",
                    "ResourceId": TARGET,
                    "ScalableDimension": DIMENSION,
                    "Description": "Setting desired instance count to 3.",
                    "Cause": "monitor alarm TargetTracking-high",
                    "StartTime": at,
                    "StatusCode": "Successful",
                    "StatusMessage": "Successfully set desired instance count to 3.",
                }
            ]
        },
        {"ServiceNamespace": "sagemaker", "ResourceId": TARGET, "ScalableDimension": DIMENSION},
    )
    with stub:
        events = VariantAutoscaling(clients, SETTINGS, logged.append).recent_events(
            "churn-endpoint", "v2"
        )
    assert events == [
        "2026-03-01T09:00:00+00:00 Successful: Setting desired instance count to 3. "
        "(Successfully set desired instance count to 3.)"
    ]
    assert logged == [f"autoscaling {TARGET}: {events[0]}"]


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        ("AccessDeniedException", False),
        ("ValidationException", False),
        ("ThrottlingException", True),
    ],
)
def test_register_errors(code: str, retryable: bool) -> None:
    clients = AwsClients(REGION, endpoint_url="http://127.0.0.1:1")
    stub = Stubber(clients.autoscaling)
    stub.add_client_error("register_scalable_target", code, "not permitted")
    with stub, pytest.raises(ApplicationError) as raised:
        VariantAutoscaling(clients, SETTINGS, lambda _: None).prepare("churn-endpoint", "v2")
    assert raised.value.non_retryable is not retryable
    assert "RegisterScalableTarget" in str(raised.value) and "not permitted" in str(raised.value)


def test_deregister_other_errors_are_raised() -> None:
    clients = AwsClients(REGION, endpoint_url="http://127.0.0.1:1")
    stub = Stubber(clients.autoscaling)
    stub.add_client_error("deregister_scalable_target", "InternalServiceException", "x", 500)
    with stub, pytest.raises(ApplicationError) as raised:
        VariantAutoscaling(clients, SETTINGS, lambda _: None).retire("churn-endpoint", "v2")
    assert not raised.value.non_retryable


def test_deregister_missing_on_real_aws_is_fine() -> None:
    """AWS answers ObjectNotFoundException where moto says ValidationException."""
    clients = AwsClients(REGION, endpoint_url="http://127.0.0.1:1")
    stub = Stubber(clients.autoscaling)
    stub.add_client_error("deregister_scalable_target", "ObjectNotFoundException", "none", 400)
    with stub:
        VariantAutoscaling(clients, SETTINGS, lambda _: None).retire("churn-endpoint", "v2")
    stub.assert_no_pending_responses()
