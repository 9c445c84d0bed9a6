"""What each gateway endpoint accepts: a parsed JSON body in, mapped events out (pure).

- `eventbridge`: S3 "Object Created", "CloudWatch Alarm State Change" (a firing Model Monitor
  drift alarm becomes drift, any other alarm an alarm), "SageMaker Processing Job State
  Change" of a monitoring execution with violations (drift).
- `s3`: S3 event notifications (`Records`), also inside an SNS envelope.
- `sns`: an SNS envelope: `SubscriptionConfirmation` / `UnsubscribeConfirmation` are handed
  back for the operator (never fetched: the gateway makes no outbound calls), `Notification`
  carries a CloudWatch alarm or S3 event notifications.
- `pubsub`: a Pub/Sub push envelope holding a Cloud Storage notification (chosen by its
  `eventType` / `bucketId` attributes), a Cloud Monitoring incident or a Vertex AI Model
  Monitoring anomaly (chosen by the shape of the data); a Monitoring webhook channel's bare
  incident is accepted too.
- `alertmanager`: an Alertmanager webhook (version 4), one event per alert.
- `eventgrid`: an Event Grid webhook delivery (EventGridEvent or CloudEvents schema): Blob
  Storage's BlobCreated; a subscription validation event is handed back for the gateway to
  answer with its code.
- `azuremonitor`: an Azure Monitor action group webhook in the common alert schema.

Each function raises ValueError (UnknownEventShape for a shape it does not know) with the
message the sender gets in its 400.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starters.events.alertmanager import alertmanager_alerts
from starters.events.aws import (
    cloudwatch_alarm,
    model_monitor_violation,
    s3_notification_records,
    s3_object_created,
)
from starters.events.azure import EventGridValidation, eventgrid_events, monitor_alert
from starters.events.gcp import gcs_object_finalize, model_monitoring_alert, monitoring_alert
from starters.events.mapped import MappedEvent, UnknownEventShape
from workflows.coordinator.triggers import AlarmState


@dataclass(frozen=True)
class Incoming:
    mapped: MappedEvent
    # The model the payload itself names (an Alertmanager `model` label), unvalidated.
    model: str | None = None


@dataclass(frozen=True)
class SnsControl:
    """An SNS subscription handshake: the operator confirms it by visiting `url`."""

    kind: str
    topic_arn: str
    url: str


Mapped = list[Incoming] | SnsControl | EventGridValidation


def _object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
    return payload


def _alarm_or_drift(payload: dict[str, Any]) -> MappedEvent:
    """A firing Model Monitor drift alarm is drift; any other alarm (a drift alarm back to OK
    included) stays an alarm, so its state change is recorded rather than refused."""
    alarm = cloudwatch_alarm(payload)
    if alarm.event.alarm is None or alarm.event.alarm.state is not AlarmState.ALARM:
        return alarm
    try:
        return model_monitor_violation(payload)
    except UnknownEventShape:
        return alarm


def eventbridge(payload: Any) -> Mapped:
    body = _object(payload)
    source, detail_type = body.get("source"), body.get("detail-type")
    if source == "aws.s3":
        return [Incoming(s3_object_created(body))]
    if source == "aws.cloudwatch":
        return [Incoming(_alarm_or_drift(body))]
    if source == "aws.sagemaker":
        return [Incoming(model_monitor_violation(body))]
    raise UnknownEventShape(
        f"unsupported EventBridge event (source {source!r}, detail-type {detail_type!r}): "
        "expected S3 'Object Created', 'CloudWatch Alarm State Change' or "
        "'SageMaker Processing Job State Change'"
    )


def s3(payload: Any) -> Mapped:
    return [Incoming(m) for m in s3_notification_records(_object(payload))]


def sns(payload: Any) -> Mapped:
    body = _object(payload)
    kind = body.get("Type")
    if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        url, topic = body.get("SubscribeURL"), body.get("TopicArn")
        if not isinstance(url, str) or not isinstance(topic, str):
            raise ValueError(f"{kind}: expected SubscribeURL and TopicArn strings")
        return SnsControl(kind=kind, topic_arn=topic, url=url)
    if kind != "Notification":
        raise UnknownEventShape(
            f"not an SNS message (Type {kind!r}): expected Notification or SubscriptionConfirmation"
        )
    message = body.get("Message")
    try:
        inner = json.loads(message) if isinstance(message, str) else None
    except json.JSONDecodeError as err:
        raise ValueError(f"Message: not JSON ({err.msg})") from None
    if isinstance(inner, dict) and ("Records" in inner or inner.get("Event") == "s3:TestEvent"):
        return s3(body)
    if isinstance(inner, dict) and "AlarmName" in inner:
        return [Incoming(_alarm_or_drift(body))]
    raise UnknownEventShape(
        "SNS notification carries neither a CloudWatch alarm nor S3 event notifications"
    )


_PUBSUB_SHAPES = (
    "a Cloud Storage notification (attributes eventType, bucketId), a Cloud Monitoring "
    "incident or a Vertex AI Model Monitoring anomaly"
)
_PUBSUB_MAPPERS: tuple[Callable[[dict[str, Any]], MappedEvent], ...] = (
    monitoring_alert,
    model_monitoring_alert,
)


def pubsub(payload: Any) -> Mapped:
    body = _object(payload)
    message = body.get("message")
    attributes = message.get("attributes") if isinstance(message, dict) else None
    if isinstance(attributes, dict) and ("eventType" in attributes or "bucketId" in attributes):
        return [Incoming(gcs_object_finalize(body))]
    if isinstance(message, dict) and not message.get("data"):
        raise UnknownEventShape(f"Pub/Sub message without data: expected {_PUBSUB_SHAPES}")
    for mapper in _PUBSUB_MAPPERS:
        try:
            return [Incoming(mapper(body))]
        except UnknownEventShape:
            continue
    raise UnknownEventShape(
        f"not a Pub/Sub push message of a known kind: expected {_PUBSUB_SHAPES}"
    )


def alertmanager(payload: Any) -> Mapped:
    return [Incoming(a.mapped, model=a.model) for a in alertmanager_alerts(payload)]


def eventgrid(payload: Any) -> Mapped:
    found = eventgrid_events(payload)
    if isinstance(found, EventGridValidation):
        return found
    return [Incoming(mapped) for mapped in found]


def azuremonitor(payload: Any) -> Mapped:
    return [Incoming(monitor_alert(payload))]


MAPPERS: dict[str, Callable[[Any], Mapped]] = {
    "eventbridge": eventbridge,
    "s3": s3,
    "sns": sns,
    "pubsub": pubsub,
    "alertmanager": alertmanager,
    "eventgrid": eventgrid,
    "azuremonitor": azuremonitor,
}
