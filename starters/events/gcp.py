"""Google Cloud event shapes mapped to trigger events: pure functions, no Google calls.

Each takes what a Pub/Sub push subscription POSTs: `{"message": {"data": <base64>,
"attributes": {...}, "messageId", "publishTime"}, "subscription"}`.

- `gcs_object_finalize`: a Cloud Storage notification (payload format JSON_API_V1: the object
  resource in `data`; format NONE: attributes only) with eventType OBJECT_FINALIZE ->
  data_arrived. The event id is the object's bucket, name and generation, so Pub/Sub's
  redeliveries and a second notification config on the bucket deduplicate. Other event types
  raise UnknownEventShape: configure the notification with `--event-types OBJECT_FINALIZE`.
- `monitoring_alert`: a Cloud Monitoring incident (the Pub/Sub notification channel's JSON, or
  the same JSON POSTed directly by a webhook channel) -> alarm named by the policy; open ->
  ALARM, closed -> OK; the endpoint from an `aiplatform.googleapis.com/Endpoint` resource.
- `model_monitoring_alert`: a Vertex AI Model Monitoring anomaly log entry, routed to Pub/Sub by
  a Cloud Logging sink on the job's anomaly log (or its `jsonPayload` alone) -> drift. It
  holds `statsAnomalies[]` (ModelMonitoringStatsAnomalies: objective RAW_FEATURE_DRIFT / SKEW,
  `featureStats[]` with each feature's threshold and `predictionStats[].distributionDeviation`).
  Score = the largest deviation; features = those over their threshold; severity from the
  largest deviation / threshold ratio: >= 3 critical, >= 2 high, otherwise medium.

Anything malformed raises `ValueError` (`UnknownEventShape` for a shape this module does not
know) with a clear message, never another exception: the gateway answers 400 with it.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from starters.events.mapped import (
    MappedEvent,
    UnknownEventShape,
    json_object,
    rfc3339_time,
    short_id,
    text_at,
    trigger_event,
    value_at,
)
from workflows.coordinator.triggers import (
    MAX_DRIFTED_FEATURES,
    AlarmState,
    Severity,
    TriggerKind,
)

ENDPOINT_RESOURCE = "aiplatform.googleapis.com/Endpoint"
DRIFT_OBJECTIVES = frozenset(
    {
        "RAW_FEATURE_DRIFT",
        "RAW_FEATURE_SKEW",
        "FEATURE_ATTRIBUTION_DRIFT",
        "FEATURE_ATTRIBUTION_SKEW",
    }
)
_INCIDENT_STATES = {"open": AlarmState.ALARM, "closed": AlarmState.OK}


# ---- typed access: every miss is a ValueError naming the path -------------------------------


def _optional_text(value: dict[str, Any], key: str) -> str | None:
    found = value.get(key)
    return found if isinstance(found, str) and found else None


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{path}: expected a number, got {type(value).__name__}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{path}: not a number: {value!r}") from None


def _message(push: Any) -> dict[str, Any]:
    payload = json_object(push, "push")
    if "message" not in payload:
        raise UnknownEventShape("not a Pub/Sub push message (no 'message')")
    return json_object(payload["message"], "message")


def _data(message: dict[str, Any]) -> dict[str, Any] | None:
    """The message's data as JSON (None when it has none)."""
    encoded = message.get("data")
    if encoded in (None, ""):
        return None
    if not isinstance(encoded, str):
        raise ValueError(f"message.data: expected base64 text, got {type(encoded).__name__}")
    try:
        decoded = base64.b64decode(encoded, validate=True)
        found = json.loads(decoded)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"message.data: not base64-encoded JSON ({err})") from None
    return json_object(found, "message.data")


def _publish_time(message: dict[str, Any]) -> datetime | None:
    text = _optional_text(message, "publishTime") or _optional_text(message, "publish_time")
    return None if text is None else rfc3339_time(text, "message.publishTime")


# ---- Cloud Storage -------------------------------------------------------------------------


def gcs_object_finalize(push: dict[str, Any]) -> MappedEvent:
    message = _message(push)
    attributes = json_object(message.get("attributes", {}), "message.attributes")
    event_type = attributes.get("eventType")
    if event_type != "OBJECT_FINALIZE":
        raise UnknownEventShape(f"not a Cloud Storage OBJECT_FINALIZE notification: {event_type!r}")
    resource = _data(message)
    if resource is not None:
        bucket, name = text_at(resource, "bucket"), text_at(resource, "name")
        generation = str(value_at(resource, "generation"))
        size: int | None = int(_number(value_at(resource, "size"), "data.size"))
        created = _optional_text(resource, "timeCreated")
        etag = _optional_text(resource, "md5Hash") or _optional_text(resource, "crc32c")
    else:
        bucket, name = text_at(attributes, "bucketId"), text_at(attributes, "objectId")
        generation = text_at(attributes, "objectGeneration")
        size, created, etag = None, _optional_text(attributes, "eventTime"), None
    occurred = rfc3339_time(created, "timeCreated") if created else _publish_time(message)
    uri = f"gs://{bucket}/{name}"
    metadata: dict[str, Any] = {"generation": generation}
    if etag:
        metadata["etag"] = etag
    event = trigger_event(
        kind=TriggerKind.DATA_ARRIVED,
        source="gcp.storage",
        event_id=short_id("gcs", bucket, name, generation),
        occurred_at=occurred,
        metadata=metadata,
        data={"uri": uri, "size_bytes": size},
    )
    return MappedEvent(event=event, uri=uri)


# ---- Cloud Monitoring ----------------------------------------------------------------------


def _epoch(value: Any, path: str) -> datetime:
    return datetime.fromtimestamp(_number(value, path), tz=UTC)


def monitoring_alert(push: dict[str, Any]) -> MappedEvent:
    payload = json_object(push, "push")
    notification = payload if "incident" in payload else _data(_message(payload))
    if notification is None or "incident" not in notification:
        raise UnknownEventShape("not a Cloud Monitoring incident notification")
    incident = json_object(notification["incident"], "incident")
    state_text = text_at(incident, "state").lower()
    if state_text not in _INCIDENT_STATES:
        raise ValueError(f"incident.state: expected open or closed, got {state_text!r}")
    state = _INCIDENT_STATES[state_text]
    policy = text_at(incident, "policy_name")
    incident_id = text_at(incident, "incident_id")
    when_key = "started_at" if state is AlarmState.ALARM else "ended_at"
    when = incident.get(when_key)
    occurred = None if when is None else _epoch(when, f"incident.{when_key}")
    resource = json_object(incident.get("resource") or {}, "incident.resource")
    labels = json_object(resource.get("labels") or {}, "incident.resource.labels")
    endpoint = labels.get("endpoint_id") if resource.get("type") == ENDPOINT_RESOURCE else None
    metadata: dict[str, Any] = {"incident_id": incident_id}
    for key in ("severity", "condition_name", "observed_value", "threshold_value", "url"):
        if isinstance(incident.get(key), str):
            metadata[key] = incident[key]
    event = trigger_event(
        kind=TriggerKind.ALARM,
        source="gcp.monitoring",
        event_id=short_id("gcp-incident", incident_id, state_text),
        occurred_at=occurred,
        metadata=metadata,
        alarm={"name": policy, "state": state, "reason": _optional_text(incident, "summary")},
    )
    return MappedEvent(event=event, alarm=policy, endpoint=endpoint)


# ---- Vertex AI Model Monitoring ------------------------------------------------------------


def _severity(ratio: float | None) -> Severity:
    if ratio is None:
        return Severity.MEDIUM
    if ratio >= 3:
        return Severity.CRITICAL
    if ratio >= 2:
        return Severity.HIGH
    return Severity.MEDIUM


def model_monitoring_alert(push: dict[str, Any]) -> MappedEvent:
    message = _message(push)
    entry = _data(message)
    if entry is None:
        raise ValueError("message.data: missing (the anomaly log entry)")
    payload = json_object(entry.get("jsonPayload", entry), "jsonPayload")
    if "statsAnomalies" not in payload:
        raise UnknownEventShape("not a Vertex AI Model Monitoring anomaly (no statsAnomalies)")
    job = text_at(payload, "modelDeploymentMonitoringJob")
    anomalies = value_at(payload, "statsAnomalies")
    if not isinstance(anomalies, list):
        raise ValueError("statsAnomalies: expected a list")
    features: dict[str, float] = {}
    ratios: list[float] = []
    objectives: set[str] = set()
    for index, item in enumerate(anomalies):
        anomaly = json_object(item, f"statsAnomalies[{index}]")
        objective = text_at(anomaly, "objective")
        if objective not in DRIFT_OBJECTIVES:
            raise ValueError(f"statsAnomalies[{index}].objective: unknown {objective!r}")
        objectives.add(objective)
        for position, stats in enumerate(anomaly.get("featureStats") or []):
            path = f"statsAnomalies[{index}].featureStats[{position}]"
            feature = text_at(stats, "featureDisplayName")
            limits = json_object(json_object(stats, path).get("threshold") or {}, path)
            threshold_value = limits.get("value")
            threshold = None if threshold_value is None else _number(threshold_value, path)
            for observed in stats.get("predictionStats") or []:
                prediction = json_object(observed, f"{path}.predictionStats")
                found = prediction.get("distributionDeviation")
                if found is None:
                    continue
                deviation = _number(found, f"{path}.predictionStats.distributionDeviation")
                if threshold is not None and threshold > 0:
                    ratios.append(deviation / threshold)
                if threshold is None or deviation > threshold:
                    features[feature] = max(deviation, features.get(feature, 0.0))
    if not features:
        raise ValueError("statsAnomalies: no feature is over its threshold")
    timestamp = _optional_text(entry, "timestamp")
    occurred = rfc3339_time(timestamp, "timestamp") if timestamp else _publish_time(message)
    drifted = sorted(features, key=lambda name: (-features[name], name))
    event_parts = [job, timestamp or _optional_text(message, "messageId") or "", *drifted]
    event = trigger_event(
        kind=TriggerKind.DRIFT,
        source="gcp.model_monitoring",
        event_id=short_id("vertex-anomaly", *event_parts),
        occurred_at=occurred,
        metadata={"objectives": sorted(objectives)},
        drift={
            "score": max(features.values()),
            "severity": _severity(max(ratios) if ratios else None),
            "features": drifted[:MAX_DRIFTED_FEATURES],
            "endpoint": _optional_text(payload, "endpoint"),
        },
    )
    return MappedEvent(
        event=event, monitoring_job=job, endpoint=_optional_text(payload, "endpoint")
    )
