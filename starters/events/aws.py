"""AWS event shapes mapped to trigger events: pure functions, no AWS calls.

- `s3_object_created`: EventBridge "Object Created" (source aws.s3) -> data_arrived.
- `s3_notification_records`: S3's own event notification (`Records[]`, also inside an SNS
  envelope) -> one data_arrived per ObjectCreated:* record; keys are URL-decoded (S3 encodes
  them in this shape); the s3:TestEvent S3 sends when a notification is configured maps to [].
- `cloudwatch_alarm`: an alarm's SNS notification (`Type: Notification`, the alarm as JSON in
  `Message`) or EventBridge "CloudWatch Alarm State Change" -> alarm, with the endpoint from the
  metric's `EndpointName` (or Model Monitor's `Endpoint`) dimension.
- `model_monitor_violation`: SageMaker Model Monitor -> drift, from either
  - an alarm (either shape above) in ALARM on a `feature_baseline_drift_<feature>` metric in
    the `aws/sagemaker/Endpoints/data-metrics` or `model-metrics` namespace. score = the
    breaching datapoint (the drift distance), severity from datapoint / threshold: >= 3
    critical, >= 2 high, otherwise medium; medium when either number is missing;
  - or EventBridge "SageMaker Processing Job State Change" of a monitoring schedule's execution
    whose ExitMessage starts with CompletedWithViolations. Severity from the number of
    violations it reports: >= 10 critical, >= 3 high, otherwise medium; the report is the
    job's `constraint_violations.json`.

Anything malformed (missing keys, wrong types, bad JSON in `Message`, another shape) raises
`ValueError` (`UnknownEventShape` for a shape this module does not know) with a clear message,
never another exception: the gateway answers 400 with it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from starters.events.mapped import (
    MappedEvent,
    UnknownEventShape,
    json_object,
    short_id,
    text_at,
    trigger_event,
    value_at,
)
from workflows.coordinator.triggers import AlarmState, Severity, TriggerKind

MONITOR_NAMESPACES = frozenset(
    {"aws/sagemaker/Endpoints/data-metrics", "aws/sagemaker/Endpoints/model-metrics"}
)
DRIFT_METRIC_PREFIX = "feature_baseline_drift_"
_DATAPOINT = re.compile(r"\[\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*\(")
_VIOLATIONS = re.compile(r"(\d+)\s+violation")


# ---- typed access: every miss is a ValueError naming the path -------------------------------


def _optional_text(value: Any, path: str) -> str | None:
    try:
        return text_at(value, path)
    except ValueError:
        return None


def _time(value: Any, path: str) -> datetime:
    text = text_at(value, path)
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{path}: not an ISO 8601 time: {text!r}") from None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def _list(value: Any, path: str) -> list[Any]:
    """An optional list: absent is empty."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{path}: expected a list, got {type(value).__name__}")
    return value


def _sns_message(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The JSON inside an SNS envelope's Message, and the envelope's MessageId."""
    message = text_at(payload, "Message")
    try:
        inner = json.loads(message)
    except json.JSONDecodeError as err:
        raise ValueError(f"Message: not JSON ({err.msg})") from None
    return json_object(inner, "Message"), text_at(payload, "MessageId")


def _is_sns(payload: dict[str, Any]) -> bool:
    return payload.get("Type") == "Notification"


# ---- S3 ------------------------------------------------------------------------------------


def _data_arrived(
    bucket: str, key: str, size: Any, event_id: str, occurred_at: datetime, etag: str | None
) -> MappedEvent:
    if isinstance(size, bool) or not isinstance(size, int | None):
        raise ValueError(f"object.size: expected an integer, got {type(size).__name__}")
    uri = f"s3://{bucket}/{key}"
    event = trigger_event(
        kind=TriggerKind.DATA_ARRIVED,
        source="aws.s3",
        event_id=event_id,
        occurred_at=occurred_at,
        metadata={"etag": etag} if etag else {},
        data={"uri": uri, "size_bytes": size},
    )
    return MappedEvent(event=event, uri=uri)


def s3_object_created(event: dict[str, Any]) -> MappedEvent:
    payload = json_object(event, "event")
    if payload.get("source") != "aws.s3" or payload.get("detail-type") != "Object Created":
        raise UnknownEventShape("not an EventBridge S3 'Object Created' event")
    return _data_arrived(
        text_at(payload, "detail.bucket.name"),
        text_at(payload, "detail.object.key"),
        json_object(value_at(payload, "detail.object"), "detail.object").get("size"),
        text_at(payload, "id"),
        _time(payload, "time"),
        _optional_text(payload, "detail.object.etag"),
    )


def s3_notification_records(payload: dict[str, Any]) -> list[MappedEvent]:
    body = json_object(payload, "payload")
    if _is_sns(body):
        body, _ = _sns_message(body)
    if body.get("Event") == "s3:TestEvent":
        return []
    records = value_at(body, "Records")
    if not isinstance(records, list):
        raise ValueError("Records: expected a list")
    mapped = []
    for index, record in enumerate(records):
        record = json_object(record, f"Records[{index}]")
        name = text_at(record, "eventName")
        if not name.startswith("ObjectCreated:"):
            continue
        bucket = text_at(record, "s3.bucket.name")
        key = unquote_plus(text_at(record, "s3.object.key"))
        # The sequencer orders writes of one key: with bucket and key it names this write.
        sequencer = _optional_text(record, "s3.object.sequencer") or text_at(record, "eventTime")
        mapped.append(
            _data_arrived(
                bucket,
                key,
                json_object(value_at(record, "s3.object"), "s3.object").get("size"),
                short_id("s3", bucket, key, sequencer),
                _time(record, "eventTime"),
                _optional_text(record, "s3.object.eTag"),
            )
        )
    return mapped


# ---- CloudWatch alarms ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Metric:
    namespace: str
    name: str
    dimensions: dict[str, str]


@dataclass(frozen=True)
class _Alarm:
    name: str
    state: AlarmState
    reason: str | None
    occurred_at: datetime
    event_id: str
    metrics: list[_Metric]
    threshold: float | None
    datapoint: float | None

    @property
    def endpoint(self) -> str | None:
        for metric in self.metrics:
            found = metric.dimensions.get("EndpointName") or metric.dimensions.get("Endpoint")
            if found:
                return found
        return None


def _state(text: str, path: str) -> AlarmState:
    try:
        return AlarmState(text)
    except ValueError:
        raise ValueError(f"{path}: unknown alarm state {text!r}") from None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _datapoint(reason: str | None) -> float | None:
    found = _DATAPOINT.search(reason or "")
    return float(found.group(1)) if found else None


def _dimensions(found: Any, path: str) -> dict[str, str]:
    if isinstance(found, list):
        pairs = [json_object(item, path) for item in found]
        return {str(p.get("name")): str(p.get("value")) for p in pairs}
    if isinstance(found, dict):
        return {str(key): str(value) for key, value in found.items()}
    raise ValueError(f"{path}: expected a list or an object")


def _alarm_from_sns(payload: dict[str, Any]) -> _Alarm:
    alarm, message_id = _sns_message(payload)
    reason = _optional_text(alarm, "NewStateReason")
    trigger = json_object(value_at(alarm, "Trigger"), "Message.Trigger")
    metrics = []
    if "MetricName" in trigger:
        metrics.append(
            _Metric(
                namespace=text_at(trigger, "Namespace"),
                name=text_at(trigger, "MetricName"),
                dimensions=_dimensions(trigger.get("Dimensions", []), "Trigger.Dimensions"),
            )
        )
    for index, item in enumerate(_list(trigger.get("Metrics"), "Trigger.Metrics")):
        metric = json_object(
            json_object(item, "Trigger.Metrics").get("MetricStat", {}), "MetricStat"
        )
        if "Metric" in metric:
            path = f"Trigger.Metrics[{index}].MetricStat.Metric"
            metrics.append(
                _Metric(
                    namespace=text_at(metric, "Metric.Namespace"),
                    name=text_at(metric, "Metric.MetricName"),
                    dimensions=_dimensions(metric["Metric"].get("Dimensions", []), path),
                )
            )
    return _Alarm(
        name=text_at(alarm, "AlarmName"),
        state=_state(text_at(alarm, "NewStateValue"), "Message.NewStateValue"),
        reason=reason,
        occurred_at=_time(alarm, "StateChangeTime"),
        event_id=message_id,
        metrics=metrics,
        threshold=_number(trigger.get("Threshold")),
        datapoint=_datapoint(reason),
    )


def _alarm_from_eventbridge(payload: dict[str, Any]) -> _Alarm:
    reason = _optional_text(payload, "detail.state.reason")
    metrics = []
    configured = json_object(value_at(payload, "detail"), "detail").get("configuration") or {}
    metrics_path = "detail.configuration.metrics"
    configured_metrics = json_object(configured, "detail.configuration").get("metrics")
    for index, item in enumerate(_list(configured_metrics, metrics_path)):
        stat = json_object(item, f"detail.configuration.metrics[{index}]").get("metricStat")
        if isinstance(stat, dict):
            metrics.append(
                _Metric(
                    namespace=text_at(stat, "metric.namespace"),
                    name=text_at(stat, "metric.name"),
                    dimensions=_dimensions(
                        value_at(stat, "metric").get("dimensions", {}), "metric.dimensions"
                    ),
                )
            )
    threshold = datapoint = None
    reason_data = _optional_text(payload, "detail.state.reasonData")
    if reason_data:
        try:
            data = json.loads(reason_data)
        except json.JSONDecodeError:
            data = {}
        if isinstance(data, dict):
            threshold = _number(data.get("threshold"))
            points = data.get("recentDatapoints")
            if isinstance(points, list) and points:
                datapoint = _number(points[-1])
    return _Alarm(
        name=text_at(payload, "detail.alarmName"),
        state=_state(text_at(payload, "detail.state.value"), "detail.state.value"),
        reason=reason,
        occurred_at=_time(payload, "time"),
        event_id=text_at(payload, "id"),
        metrics=metrics,
        threshold=threshold,
        datapoint=datapoint if datapoint is not None else _datapoint(reason),
    )


def _alarm(payload: Any) -> _Alarm:
    body = json_object(payload, "payload")
    if _is_sns(body):
        return _alarm_from_sns(body)
    if body.get("source") == "aws.cloudwatch" and (
        body.get("detail-type") == "CloudWatch Alarm State Change"
    ):
        return _alarm_from_eventbridge(body)
    raise UnknownEventShape(
        "not a CloudWatch alarm: expected an SNS notification or an EventBridge "
        "'CloudWatch Alarm State Change' event"
    )


def cloudwatch_alarm(payload: dict[str, Any]) -> MappedEvent:
    alarm = _alarm(payload)
    event = trigger_event(
        kind=TriggerKind.ALARM,
        source="aws.cloudwatch",
        event_id=alarm.event_id,
        occurred_at=alarm.occurred_at,
        alarm={
            "name": alarm.name,
            "state": alarm.state,
            "reason": None if alarm.reason is None else alarm.reason[:2000],
        },
    )
    return MappedEvent(event=event, endpoint=alarm.endpoint, alarm=alarm.name)


# ---- Model Monitor -------------------------------------------------------------------------


def _severity_of_ratio(datapoint: float | None, threshold: float | None) -> Severity:
    if datapoint is None or threshold is None or threshold <= 0:
        return Severity.MEDIUM
    ratio = datapoint / threshold
    if ratio >= 3:
        return Severity.CRITICAL
    if ratio >= 2:
        return Severity.HIGH
    return Severity.MEDIUM


def _severity_of_violations(count: int | None) -> Severity:
    if count is not None and count >= 10:
        return Severity.CRITICAL
    if count is not None and count >= 3:
        return Severity.HIGH
    return Severity.MEDIUM


def _drift_alarm(payload: dict[str, Any]) -> MappedEvent:
    alarm = _alarm(payload)
    drifting = [
        metric
        for metric in alarm.metrics
        if metric.namespace in MONITOR_NAMESPACES and metric.name.startswith(DRIFT_METRIC_PREFIX)
    ]
    if not drifting:
        raise UnknownEventShape(
            f"alarm {alarm.name!r} is not on a Model Monitor {DRIFT_METRIC_PREFIX}<feature> metric"
        )
    if alarm.state != AlarmState.ALARM:
        raise ValueError(f"alarm {alarm.name!r} is {alarm.state.value}: no drift to report")
    schedules = [
        m.dimensions["MonitoringSchedule"] for m in drifting if "MonitoringSchedule" in m.dimensions
    ]
    schedule = schedules[0] if schedules else None
    event = trigger_event(
        kind=TriggerKind.DRIFT,
        source="aws.sagemaker.model-monitor",
        event_id=alarm.event_id,
        occurred_at=alarm.occurred_at,
        metadata={"alarm": alarm.name},
        drift={
            "score": None if alarm.datapoint is None or alarm.datapoint < 0 else alarm.datapoint,
            "severity": _severity_of_ratio(alarm.datapoint, alarm.threshold),
            "features": sorted({m.name.removeprefix(DRIFT_METRIC_PREFIX) for m in drifting}),
            "endpoint": alarm.endpoint,
        },
    )
    return MappedEvent(
        event=event, endpoint=alarm.endpoint, alarm=alarm.name, monitoring_job=schedule
    )


def _monitoring_execution(payload: dict[str, Any]) -> MappedEvent:
    detail = json_object(value_at(payload, "detail"), "detail")
    job = text_at(detail, "ProcessingJobName")
    schedule_arn = _optional_text(detail, "MonitoringScheduleArn")
    if schedule_arn is None:
        raise UnknownEventShape(f"processing job {job!r} is not a monitoring schedule's execution")
    exit_message = _optional_text(detail, "ExitMessage") or ""
    if not exit_message.startswith("CompletedWithViolations"):
        status = _optional_text(detail, "ProcessingJobStatus") or "unknown"
        raise ValueError(
            f"monitoring execution {job!r} ({status}) reported no violations: {exit_message!r}"
        )
    found = _VIOLATIONS.search(exit_message)
    count = int(found.group(1)) if found else None
    report = None
    outputs = json_object(detail.get("ProcessingOutputConfig") or {}, "ProcessingOutputConfig")
    for output in _list(outputs.get("Outputs"), "ProcessingOutputConfig.Outputs"):
        uri = _optional_text(output, "S3Output.S3Uri")
        if uri:
            report = f"{uri.rstrip('/')}/constraint_violations.json"
            break
    schedule = schedule_arn.rsplit("/", 1)[-1]
    event = trigger_event(
        kind=TriggerKind.DRIFT,
        source="aws.sagemaker.model-monitor",
        event_id=text_at(payload, "id"),
        occurred_at=_time(payload, "time"),
        metadata={"processing_job": job, "violations": count},
        drift={"severity": _severity_of_violations(count), "report_uri": report},
    )
    return MappedEvent(event=event, monitoring_job=schedule)


def model_monitor_violation(payload: dict[str, Any]) -> MappedEvent:
    body = json_object(payload, "payload")
    if body.get("source") == "aws.sagemaker" and (
        body.get("detail-type") == "SageMaker Processing Job State Change"
    ):
        return _monitoring_execution(body)
    return _drift_alarm(body)
