"""Application Auto Scaling of a SageMaker endpoint's production variants.

`VariantAutoscaling.prepare` registers a variant as a scalable target with target tracking on
invocations per instance (plus CPU / GPU utilisation when the settings ask for them) and the
settings' scheduled actions. The endpoint calls it before the variant takes any traffic, so a
challenger at 5% already scales when its share grows. Every call is a put (same name, same
values), so a retried activity re-applies the same configuration instead of adding a second.
`retire` removes a variant's target before the variant leaves the endpoint (AWS refuses to
remove a variant that still has one). `events` reads what the scaler did (as `ScalingEvent`s the
endpoint records in the scaling log, and as log lines).

CPU and GPU targets are in the metrics' own units: SageMaker's `CPUUtilization` and
`GPUUtilization` in `/aws/sagemaker/Endpoints` are summed over the instance's cores / GPUs
(0-400% on 4 vCPUs), so the settings' targets are too (`AwsAutoscaling`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from activities.aws.clients import AwsClients
from activities.aws.errors import aws_call, call, error_code, translate
from workflows.rollout.models import ScalingEvent
from workflows.spec.sagemaker import AwsAutoscaling

NAMESPACE = "sagemaker"
# "Setting desired instance count to 3." -> 3
_DESIRED = re.compile(r"desired instance count to (\d+)")
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# Where SageMaker publishes the instances' CPU and GPU utilisation.
INSTANCE_METRICS_NAMESPACE = "/aws/sagemaker/Endpoints"


def resource_id(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


class VariantAutoscaling:
    def __init__(
        self, clients: AwsClients, settings: AwsAutoscaling, log: Callable[[str], None]
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.log = log

    def prepare(self, endpoint: str, variant: str) -> None:
        """Register the variant's scalable target, its policies and scheduled actions."""
        client = self.clients.autoscaling
        target = resource_id(endpoint, variant)
        call(
            "RegisterScalableTarget",
            client.register_scalable_target,
            ServiceNamespace=NAMESPACE,
            ResourceId=target,
            ScalableDimension=DIMENSION,
            MinCapacity=self.settings.min_capacity,
            MaxCapacity=self.settings.max_capacity,
        )
        for name, configuration in self._policies(endpoint, variant).items():
            call(
                "PutScalingPolicy",
                client.put_scaling_policy,
                PolicyName=name,
                ServiceNamespace=NAMESPACE,
                ResourceId=target,
                ScalableDimension=DIMENSION,
                PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration=configuration,
            )
        for scheduled in self.settings.scheduled:
            call(
                "PutScheduledAction",
                client.put_scheduled_action,
                ServiceNamespace=NAMESPACE,
                ScheduledActionName=scheduled.name,
                ResourceId=target,
                ScalableDimension=DIMENSION,
                Schedule=scheduled.schedule,
                Timezone=scheduled.timezone,
                ScalableTargetAction={
                    "MinCapacity": scheduled.min_capacity,
                    "MaxCapacity": scheduled.max_capacity,
                },
            )
        self.log(
            f"autoscaling {target}: {self.settings.min_capacity}..{self.settings.max_capacity} "
            f"instances, {len(self.settings.scheduled)} scheduled action(s)"
        )

    def _policies(self, endpoint: str, variant: str) -> dict[str, dict[str, Any]]:
        cooldowns = {
            "ScaleInCooldown": int(self.settings.scale_in_cooldown.total_seconds()),
            "ScaleOutCooldown": int(self.settings.scale_out_cooldown.total_seconds()),
        }
        policies: dict[str, dict[str, Any]] = {
            f"{endpoint}-{variant}-invocations": {
                "TargetValue": self.settings.invocations_per_instance,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
                **cooldowns,
            }
        }
        utilisation = {
            "cpu": ("CPUUtilization", self.settings.cpu_utilization),
            "gpu": ("GPUUtilization", self.settings.gpu_utilization),
        }
        for short, (metric, target) in utilisation.items():
            if target is None:
                continue
            policies[f"{endpoint}-{variant}-{short}"] = {
                "TargetValue": target,
                "CustomizedMetricSpecification": {
                    "MetricName": metric,
                    "Namespace": INSTANCE_METRICS_NAMESPACE,
                    "Dimensions": [
                        {"Name": "EndpointName", "Value": endpoint},
                        {"Name": "VariantName", "Value": variant},
                    ],
                    "Statistic": "Average",
                    "Unit": "Percent",
                },
                **cooldowns,
            }
        return policies

    def retire(self, endpoint: str, variant: str) -> None:
        """Deregister the variant's target (and with it its policies); absent is fine."""
        try:
            self.clients.autoscaling.deregister_scalable_target(
                ServiceNamespace=NAMESPACE,
                ResourceId=resource_id(endpoint, variant),
                ScalableDimension=DIMENSION,
            )
        except ClientError as error:
            if not _no_target(error):
                raise translate(error, "DeregisterScalableTarget") from error
        self.log(f"autoscaling {resource_id(endpoint, variant)}: deregistered")

    def events(self, model: str, endpoint: str, variant: str) -> list[ScalingEvent]:
        """The scaler's latest activities on the variant, newest first, each also logged."""
        with aws_call("DescribeScalingActivities"):
            response = self.clients.autoscaling.describe_scaling_activities(
                ServiceNamespace=NAMESPACE,
                ResourceId=resource_id(endpoint, variant),
                ScalableDimension=DIMENSION,
            )
        found = []
        for activity in response.get("ScalingActivities", []):
            description = str(activity["Description"]) + (
                f" ({activity['StatusMessage']})" if activity.get("StatusMessage") else ""
            )
            desired = _DESIRED.search(str(activity["Description"]))
            cause = str(activity.get("Cause", "")).lower()
            event = ScalingEvent(
                event_id=str(activity["ActivityId"]),
                model=model,
                backend="sagemaker",
                endpoint=endpoint,
                variant=variant,
                at=activity["StartTime"],
                kind="scheduled" if "scheduled action" in cause else "policy",
                status=str(activity["StatusCode"]),
                description=description,
                desired=int(desired.group(1)) if desired else None,
            )
            self.log(f"autoscaling {resource_id(endpoint, variant)}: {event_text(event)}")
            found.append(event)
        return found

    def recent_events(self, endpoint: str, variant: str) -> list[str]:
        """The same activities as log lines."""
        return [event_text(e) for e in self.events("-", endpoint, variant)]


def event_text(event: ScalingEvent) -> str:
    return f"{event.at.isoformat()} {event.status}: {event.description}"


def _no_target(error: ClientError) -> bool:
    # AWS answers ObjectNotFoundException; moto a ValidationException saying the same.
    code = error_code(error)
    message = str(error.response.get("Error", {}).get("Message", ""))
    return code == "ObjectNotFoundException" or (
        code == "ValidationException" and "No scalable target" in message
    )
