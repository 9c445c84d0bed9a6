"""Azure Monitor autoscale settings of the online deployments.

One setting per deployment (`<endpoint>-<deployment>`, in the workspace's resource group),
targeting the deployment: a default profile scaling out by one instance above the settings'
average CPU (5 minutes) and in by one below half of it, between `minimum` and `maximum`; and
one weekly profile per scheduled capacity (Azure Monitor switches profiles itself: a recurring
profile holds until the next one starts). Written once, when the deployment is first ready,
and again only when the wanted setting differs from what is there.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from activities.azure.clients import AzureClients
from activities.azure.errors import azure_call
from workflows.spec.azure import AzureSettings

CPU_METRIC = "CpuUtilizationPercentage"


def setting_name(settings: AzureSettings, deployment: str) -> str:
    return f"{settings.endpoint_name}-{deployment}"


def wanted_setting(settings: AzureSettings, target: str, location: str) -> Any:
    from azure.mgmt.monitor.models import (
        AutoscaleProfile,
        AutoscaleSettingResource,
        MetricTrigger,
        Recurrence,
        RecurrentSchedule,
        ScaleAction,
        ScaleCapacity,
        ScaleRule,
    )

    scale = settings.autoscale

    def rule(operator: str, threshold: float, direction: str) -> Any:
        return ScaleRule(
            metric_trigger=MetricTrigger(
                metric_name=CPU_METRIC,
                metric_resource_uri=target,
                time_grain=timedelta(minutes=1),
                statistic="Average",
                time_window=timedelta(minutes=5),
                time_aggregation="Average",
                operator=operator,
                threshold=threshold,
            ),
            scale_action=ScaleAction(
                direction=direction, type="ChangeCount", value="1", cooldown=timedelta(minutes=5)
            ),
        )

    rules = [
        rule("GreaterThan", scale.cpu_target, "Increase"),
        rule("LessThan", scale.cpu_target / 2, "Decrease"),
    ]
    minimum = max(scale.minimum, min(settings.serving_instance_count, scale.maximum))
    profiles = [
        AutoscaleProfile(
            name="default",
            capacity=ScaleCapacity(
                minimum=str(scale.minimum), maximum=str(scale.maximum), default=str(minimum)
            ),
            rules=rules,
        )
    ]
    for scheduled in scale.scheduled:
        profiles.append(
            AutoscaleProfile(
                name=scheduled.name,
                capacity=ScaleCapacity(
                    minimum=str(scheduled.minimum),
                    maximum=str(scheduled.maximum),
                    default=str(scheduled.minimum),
                ),
                rules=rules,
                recurrence=Recurrence(
                    frequency="Week",
                    schedule=RecurrentSchedule(
                        time_zone=scheduled.timezone,
                        days=list(scheduled.days),
                        hours=[scheduled.hour],
                        minutes=[scheduled.minute],
                    ),
                ),
            )
        )
    return AutoscaleSettingResource(
        location=location,
        target_resource_uri=target,
        enabled=True,
        profiles=profiles,
        tags={**settings.tags, "retrain.endpoint": settings.endpoint_name},
    )


def _summary(setting: Any) -> list[tuple[Any, ...]]:
    """What we set, comparable between the wanted and the stored setting."""
    return [
        (
            p.name,
            p.capacity.minimum,
            p.capacity.maximum,
            p.capacity.default,
            len(p.rules or []),
            None if p.recurrence is None else tuple(p.recurrence.schedule.days),
            None if p.recurrence is None else tuple(p.recurrence.schedule.hours),
        )
        for p in setting.profiles
    ]


def ensure_autoscale(
    clients: AzureClients, settings: AzureSettings, deployment: str, location: str
) -> bool:
    """Create or update the deployment's autoscale setting; True when it was written."""
    if not settings.autoscale.enabled:
        return False
    target = f"{clients.endpoint_id}/deployments/{deployment}"
    wanted = wanted_setting(settings, target, location)
    name = setting_name(settings, deployment)
    group = settings.resource_group
    with azure_call(f"read autoscale setting {name}"):
        try:
            current = clients.monitor.autoscale_settings.get(group, name)
        except ResourceNotFoundError:
            current = None
    if current is not None and _summary(current) == _summary(wanted):
        return False
    with azure_call(f"write autoscale setting {name}"):
        clients.monitor.autoscale_settings.create_or_update(group, name, wanted)
    return True
