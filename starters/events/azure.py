"""Azure event shapes mapped to trigger events: pure functions, no Azure calls.

- `eventgrid_events`: what an Event Grid webhook subscription POSTs, in either schema: a JSON
  array of EventGridEvents (`eventType`, `subject`, `eventTime`, `data`, `topic`) or of
  CloudEvents 1.0 (`type`, `subject`, `time`, `data`, `source`; one event or a batch).
  `Microsoft.Storage.BlobCreated` -> data_arrived with the blob as `az://<container>/<path>`
  (what a spec's data URIs say); the event id is the account, container, path and the blob
  write's sequencer (else its ETag), so Event Grid's redeliveries deduplicate. Other storage
  events (BlobDeleted, ...) are ignored: subscribe to BlobCreated only.
  `Microsoft.EventGrid.SubscriptionValidationEvent` is the subscription's validation
  handshake: `EventGridValidation` carries the code the gateway answers with.
- `monitor_alert`: an Azure Monitor action group's webhook in the common alert schema
  (`schemaId` azureMonitorCommonAlertSchema): alarm named by the alert rule; Fired -> ALARM,
  Resolved -> OK; the endpoint from a target `.../onlineEndpoints/<name>` (its deployments
  too). The event id is the alert's id and condition, so a redelivery deduplicates.

Anything malformed raises `ValueError` (`UnknownEventShape` for a shape this module does not
know) with a clear message: the gateway answers 400 with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from starters.events.mapped import (
    MappedEvent,
    UnknownEventShape,
    json_object,
    rfc3339_time,
    short_id,
    text_at,
    trigger_event,
)
from workflows.coordinator.triggers import AlarmState, TriggerKind

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
COMMON_ALERT_SCHEMA = "azureMonitorCommonAlertSchema"
_CONDITIONS = {"fired": AlarmState.ALARM, "resolved": AlarmState.OK}
_ENDPOINT = re.compile(r"/onlineendpoints/([^/]+)", re.IGNORECASE)
_SUBJECT = re.compile(r"^/blobServices/default/containers/([^/]+)/blobs/(.+)$")


@dataclass(frozen=True)
class EventGridValidation:
    """Event Grid's subscription validation: answered with `{"validationResponse": code}`;
    `url` lets an operator validate by hand instead."""

    code: str
    url: str | None = None


def _text(event: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        found = event.get(key)
        if isinstance(found, str) and found:
            return found
    return None


def _events(payload: Any) -> list[dict[str, Any]]:
    items = payload if isinstance(payload, list) else [payload]
    return [json_object(item, f"events[{index}]") for index, item in enumerate(items)]


def eventgrid_events(payload: Any) -> list[MappedEvent] | EventGridValidation:
    events = _events(payload)
    mapped: list[MappedEvent] = []
    for index, event in enumerate(events):
        kind = _text(event, "eventType", "type")
        if kind is None:
            raise UnknownEventShape(
                f"events[{index}]: not an Event Grid event (no eventType or type)"
            )
        if kind == VALIDATION:
            data = json_object(event.get("data"), f"events[{index}].data")
            return EventGridValidation(
                code=text_at(data, "validationCode"), url=_text(data, "validationUrl")
            )
        if kind == BLOB_CREATED:
            mapped.append(blob_created(event, f"events[{index}]"))
        elif not kind.startswith("Microsoft.Storage."):
            raise UnknownEventShape(
                f"events[{index}]: {kind!r} is not a Blob Storage event (expected {BLOB_CREATED})"
            )
    return mapped


def blob_created(event: dict[str, Any], path: str = "event") -> MappedEvent:
    data = json_object(event.get("data"), f"{path}.data")
    url = text_at(event, "data.url")
    parts = urlsplit(url)
    account = parts.netloc.split(".", 1)[0]
    container, _, name = unquote(parts.path).lstrip("/").partition("/")
    subject = _text(event, "subject")
    found = _SUBJECT.match(subject or "")
    if found is not None:  # the subject names the blob exactly (the url may be a DFS one)
        container, name = found.group(1), found.group(2)
    if not account or not container or not name:
        raise ValueError(f"{path}.data.url: not a blob URL: {url!r}")
    stamp = _text(event, "eventTime", "time")
    etag = _text(data, "eTag", "etag")
    write = _text(data, "sequencer") or etag or text_at(event, "id")
    size = data.get("contentLength")
    if isinstance(size, bool) or not isinstance(size, int | None):
        raise ValueError(f"{path}.data.contentLength: expected an integer")
    uri = f"az://{container}/{name}"
    metadata: dict[str, Any] = {"account": account}
    if etag:
        metadata["etag"] = etag
    trigger = trigger_event(
        kind=TriggerKind.DATA_ARRIVED,
        source="azure.storage",
        event_id=short_id("azblob", account, container, name, write),
        occurred_at=None if stamp is None else rfc3339_time(stamp, f"{path}.eventTime"),
        metadata=metadata,
        data={"uri": uri, "size_bytes": size},
    )
    return MappedEvent(event=trigger, uri=uri)


def monitor_alert(payload: Any) -> MappedEvent:
    body = json_object(payload, "payload")
    if body.get("schemaId") != COMMON_ALERT_SCHEMA:
        raise UnknownEventShape(
            f"not an Azure Monitor alert in the common alert schema (schemaId "
            f"{body.get('schemaId')!r}): enable the common alert schema on the action group"
        )
    essentials = json_object(
        json_object(body.get("data"), "data").get("essentials"), "data.essentials"
    )
    condition = text_at(essentials, "monitorCondition").lower()
    if condition not in _CONDITIONS:
        raise ValueError(
            f"data.essentials.monitorCondition: expected Fired or Resolved, got {condition!r}"
        )
    state = _CONDITIONS[condition]
    rule = text_at(essentials, "alertRule")
    alert_id = text_at(essentials, "alertId")
    when = _text(essentials, "firedDateTime" if state is AlarmState.ALARM else "resolvedDateTime")
    targets = essentials.get("alertTargetIDs") or []
    if not isinstance(targets, list):
        raise ValueError("data.essentials.alertTargetIDs: expected a list")
    endpoint = next(
        (m.group(1) for t in targets if isinstance(t, str) and (m := _ENDPOINT.search(t))), None
    )
    metadata: dict[str, Any] = {"alert_id": alert_id}
    for key in ("severity", "signalType", "monitoringService", "description"):
        if isinstance(essentials.get(key), str):
            metadata[key] = essentials[key]
    event = trigger_event(
        kind=TriggerKind.ALARM,
        source="azure.monitor",
        event_id=short_id("azure-alert", alert_id, condition),
        occurred_at=None if when is None else rfc3339_time(when, "data.essentials.firedDateTime"),
        metadata=metadata,
        alarm={"name": rule, "state": state, "reason": _text(essentials, "description")},
    )
    return MappedEvent(event=event, alarm=rule, endpoint=endpoint)
