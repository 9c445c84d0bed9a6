"""Prometheus Alertmanager webhook payloads (version 4) mapped to trigger events: pure functions.

Alertmanager POSTs one notification per alert group:

    {"version": "4", "status": "firing", "receiver": "...", "groupKey": "...",
     "alerts": [{"status": "firing", "labels": {"alertname": ..., "model": ..., "severity": ...},
                 "annotations": {"summary": ...}, "startsAt": ..., "endsAt": ...,
                 "generatorURL": ..., "fingerprint": ...}], ...}

Each alert becomes one alarm trigger named by its `alertname`: firing -> ALARM, resolved -> OK.
The event id is derived from the alert's fingerprint, its startsAt and its status, so
Alertmanager's repeated notifications of the same alert (group_interval, repeat_interval) are
deduplicated by the coordinator, while a resolution and a later re-firing are new events.
Priority comes from a `priority` label (`1`..`5` or `P1`..`P5`) or, without one, from
`severity` (critical/page 1, high/error/major 2, warning/medium 3, low/minor 4, info/none 5;
anything else keeps the default 3). The `model` label names the model (the gateway routes by
it); an `endpoint` label is used for routing when there is no `model` label.

Anything malformed raises ValueError (`UnknownEventShape` for another shape) with a clear
message: the gateway answers 400 with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from starters.events.mapped import (
    MappedEvent,
    UnknownEventShape,
    json_object,
    rfc3339_time,
    short_id,
)
from workflows.common.models import describe_validation_error
from workflows.coordinator.triggers import AlarmState, TriggerEvent, TriggerKind

SOURCE = "alertmanager"
_STATES = {"firing": AlarmState.ALARM, "resolved": AlarmState.OK}
_SEVERITY_PRIORITY = {
    "critical": 1,
    "page": 1,
    "high": 2,
    "error": 2,
    "major": 2,
    "warning": 3,
    "medium": 3,
    "low": 4,
    "minor": 4,
    "info": 5,
    "none": 5,
}
_DEFAULT_PRIORITY = 3
# Labels travel in the event's metadata (8 KiB at most): keep them well under it.
_MAX_LABELS_BYTES = 4096
_MAX_REASON = 2000
_MAX_URL = 2000
# Alertmanager writes this for an alert that has not ended yet.
_ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class MappedAlert:
    mapped: MappedEvent
    # The alert's `model` label, as given (the gateway validates it as a model name).
    model: str | None


def _labels(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    found = json_object(value, path)
    for key, item in found.items():
        if not isinstance(item, str):
            raise ValueError(f"{path}.{key}: expected a string, got {type(item).__name__}")
    return found


def _text(value: dict[str, Any], key: str, path: str) -> str:
    found = value.get(key)
    if not isinstance(found, str) or not found:
        raise ValueError(f"{path}.{key}: expected a non-empty string")
    return found


def priority_of(labels: dict[str, str], path: str = "labels") -> int:
    """From the `priority` label when given (it must be valid), else from `severity`."""
    given = labels.get("priority")
    if given is not None:
        digits = given.strip().upper().removeprefix("P")
        if digits.isdigit() and 1 <= int(digits) <= 5:
            return int(digits)
        raise ValueError(f"{path}.priority: expected 1-5 or P1-P5, got {given!r}")
    severity = labels.get("severity", "").strip().lower()
    return _SEVERITY_PRIORITY.get(severity, _DEFAULT_PRIORITY)


def _alert(item: Any, index: int, group_status: str) -> MappedAlert:
    path = f"alerts[{index}]"
    alert = json_object(item, path)
    status = alert.get("status", group_status)
    if status not in _STATES:
        raise ValueError(f"{path}.status: expected firing or resolved, got {status!r}")
    labels = _labels(alert.get("labels"), f"{path}.labels")
    name = labels.get("alertname")
    if not name:
        raise ValueError(f"{path}.labels.alertname: missing")
    annotations = _labels(alert.get("annotations"), f"{path}.annotations")
    starts_text = _text(alert, "startsAt", path)
    starts_at = rfc3339_time(starts_text, f"{path}.startsAt")
    ends_text = alert.get("endsAt")
    occurred_at = starts_at
    if status == "resolved" and isinstance(ends_text, str) and ends_text not in ("", _ZERO_TIME):
        occurred_at = rfc3339_time(ends_text, f"{path}.endsAt")
    fingerprint = alert.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        # Older Alertmanagers send none: the sorted labels identify the alert just as well.
        fingerprint = json.dumps(labels, sort_keys=True)
    reason = annotations.get("summary") or annotations.get("description")
    metadata: dict[str, Any] = {"fingerprint": fingerprint[:200]}
    if "severity" in labels:
        metadata["severity"] = labels["severity"]
    url = alert.get("generatorURL")
    if isinstance(url, str) and url:
        metadata["generator_url"] = url[:_MAX_URL]
    if len(json.dumps(labels)) <= _MAX_LABELS_BYTES:
        metadata["labels"] = labels
    try:
        event = TriggerEvent(
            kind=TriggerKind.ALARM,
            source=SOURCE,
            event_id=short_id("alertmanager", fingerprint, starts_text, status),
            occurred_at=occurred_at,
            priority=priority_of(labels, f"{path}.labels"),
            metadata=metadata,
            alarm={
                "name": name[:200],
                "state": _STATES[status],
                "reason": None if reason is None else reason[:_MAX_REASON],
            },
        )
    except ValidationError as err:
        raise ValueError(f"{path}: {describe_validation_error(err)}") from None
    mapped = MappedEvent(event=event, alarm=name, endpoint=labels.get("endpoint") or None)
    return MappedAlert(mapped=mapped, model=labels.get("model") or None)


def alertmanager_alerts(payload: Any) -> list[MappedAlert]:
    """One alarm trigger per alert of an Alertmanager webhook notification (version 4)."""
    body = json_object(payload, "payload")
    if "alerts" not in body or "version" not in body:
        raise UnknownEventShape(
            "not an Alertmanager webhook notification (expected 'version' and 'alerts')"
        )
    if body["version"] != "4":
        raise UnknownEventShape(
            f"Alertmanager webhook version {body['version']!r} is not supported (expected '4')"
        )
    group_status = body.get("status", "firing")
    alerts = body["alerts"]
    if not isinstance(alerts, list):
        raise ValueError(f"alerts: expected a list, got {type(alerts).__name__}")
    return [_alert(item, index, group_status) for index, item in enumerate(alerts)]
