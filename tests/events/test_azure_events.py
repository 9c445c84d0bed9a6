"""Azure payloads mapped to trigger events: Event Grid (both schemas, the validation event) and
Azure Monitor's common alert schema, as Azure sends them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from starters.events.azure import (
    EventGridValidation,
    blob_created,
    eventgrid_events,
    monitor_alert,
)
from starters.events.mapped import UnknownEventShape
from workflows.coordinator.triggers import AlarmState, TriggerKind

BLOB_URL = "https://retrainstore.blob.core.windows.net/retrain-data/demand/labelled/date=2026-12-06/part-0.parquet"
# Blob Storage's BlobCreated, EventGridEvent schema (Azure docs' sample, our names).
BLOB_CREATED: dict[str, Any] = {
    "topic": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/ml-prod"
    "/providers/Microsoft.Storage/storageAccounts/retrainstore",
    "subject": "/blobServices/default/containers/retrain-data/blobs/demand/labelled"
    "/date=2026-12-06/part-0.parquet",
    "eventType": "Microsoft.Storage.BlobCreated",
    "id": "831e1650-001e-001b-66ab-eeb76e069631",
    "data": {
        "api": "PutBlockList",
        "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca89f0b",
        "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
        "eTag": "0x8D4BCC2E4835CD0",
        "contentType": "application/octet-stream",
        "contentLength": 524288,
        "blobType": "BlockBlob",
        "url": BLOB_URL,
        "sequencer": "00000000000004420000000000028963",
        "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"},
    },
    "dataVersion": "",
    "metadataVersion": "1",
    "eventTime": "2026-12-06T10:00:00.0000000Z",
}
# The same event in the CloudEvents 1.0 schema.
BLOB_CREATED_CLOUDEVENT: dict[str, Any] = {
    "source": BLOB_CREATED["topic"],
    "subject": BLOB_CREATED["subject"],
    "type": "Microsoft.Storage.BlobCreated",
    "time": "2026-12-06T10:00:00.0000000Z",
    "id": BLOB_CREATED["id"],
    "data": BLOB_CREATED["data"],
    "specversion": "1.0",
}
VALIDATION: dict[str, Any] = {
    "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
    "topic": "/subscriptions/00000000-0000-0000-0000-000000000001",
    "subject": "",
    "data": {
        "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
        "validationUrl": "https://rp-westeurope.eventgrid.azure.net/eventsubscriptions/x/validate?id=1&t=2&apiVersion=2018-05-01-preview&token=abc",
    },
    "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
    "eventTime": "2026-12-06T09:00:00.000Z",
    "metadataVersion": "1",
    "dataVersion": "1",
}
ENDPOINT_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourcegroups/ml-prod/providers"
    "/microsoft.machinelearningservices/workspaces/acme-ml/onlineendpoints/demand-endpoint"
)
# An action group webhook in the common alert schema: a metric alert on the endpoint.
ALERT: dict[str, Any] = {
    "schemaId": "azureMonitorCommonAlertSchema",
    "data": {
        "essentials": {
            "alertId": "/subscriptions/00000000-0000-0000-0000-000000000001/providers"
            "/Microsoft.AlertsManagement/alerts/b9569717-bc32-442f-add5-83a997729330",
            "alertRule": "demand-5xx-rate",
            "severity": "Sev2",
            "signalType": "Metric",
            "monitorCondition": "Fired",
            "monitoringService": "Platform",
            "alertTargetIDs": [ENDPOINT_ID],
            "configurationItems": ["demand-endpoint"],
            "originAlertId": "3f2d4487-b0fc-4125-8bd5-7ad17384221e_PipeLineAlertRG",
            "firedDateTime": "2026-12-06T11:58:24.3713213Z",
            "description": "5xx above 2% for 5 minutes",
            "essentialsVersion": "1.0",
            "alertContextVersion": "1.0",
        },
        "alertContext": {
            "properties": None,
            "conditionType": "SingleResourceMultipleMetricCriteria",
            "condition": {"windowSize": "PT5M", "allOf": []},
        },
    },
}


def test_blob_created_is_data_arrived_on_the_blobs_az_uri() -> None:
    for payload in (BLOB_CREATED, BLOB_CREATED_CLOUDEVENT):
        found = eventgrid_events([payload])
        assert isinstance(found, list)
        [mapped] = found
        event = mapped.event
        assert mapped.uri == "az://retrain-data/demand/labelled/date=2026-12-06/part-0.parquet"
        assert event.kind is TriggerKind.DATA_ARRIVED and event.source == "azure.storage"
        assert event.data is not None and event.data.size_bytes == 524288
        assert event.occurred_at == datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
        assert event.metadata == {"account": "retrainstore", "etag": "0x8D4BCC2E4835CD0"}
    # Both schemas, and Event Grid's redeliveries, are one event.
    ids = {eventgrid_events([p])[0].event.event_id for p in (BLOB_CREATED, BLOB_CREATED_CLOUDEVENT)}  # type: ignore[index]
    assert len(ids) == 1
    rewritten = copy.deepcopy(BLOB_CREATED)
    rewritten["data"]["sequencer"] = "00000000000004420000000000028999"
    assert blob_created(rewritten).event.event_id not in ids


def test_a_batch_maps_every_blob_created_and_skips_other_storage_events() -> None:
    deleted = {**BLOB_CREATED, "eventType": "Microsoft.Storage.BlobDeleted"}
    second = copy.deepcopy(BLOB_CREATED_CLOUDEVENT)
    second["subject"] = "/blobServices/default/containers/retrain-data/blobs/demand/x.parquet"
    second["data"]["url"] = BLOB_URL.rsplit("/", 3)[0] + "/x.parquet"
    found = eventgrid_events([BLOB_CREATED, deleted, second])
    assert isinstance(found, list)
    assert [m.uri for m in found] == [
        "az://retrain-data/demand/labelled/date=2026-12-06/part-0.parquet",
        "az://retrain-data/demand/x.parquet",
    ]
    # A single CloudEvent (not in a batch) is accepted too.
    single = eventgrid_events(BLOB_CREATED_CLOUDEVENT)
    assert isinstance(single, list) and len(single) == 1


def test_the_subscription_validation_event_hands_back_its_code() -> None:
    found = eventgrid_events([VALIDATION])
    assert found == EventGridValidation(
        code="512d38b6-c7b8-40c8-89fe-f46f9e9622b6", url=VALIDATION["data"]["validationUrl"]
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([{"id": "1"}], "not an Event Grid event"),
        ([{**BLOB_CREATED, "eventType": "Microsoft.Resources.ResourceWriteSuccess"}], "not a Blob"),
        ([{**BLOB_CREATED, "data": {"url": 3}}], "data.url"),
        ([{**VALIDATION, "data": {}}], "validationCode"),
        (
            [{**BLOB_CREATED, "data": {**BLOB_CREATED["data"], "contentLength": "big"}}],
            "contentLength",
        ),
    ],
)
def test_malformed_event_grid_payloads_say_what_is_wrong(payload: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        eventgrid_events(payload)


def test_an_azure_monitor_alert_is_an_alarm_on_the_endpoint() -> None:
    fired = monitor_alert(ALERT)
    assert fired.alarm == "demand-5xx-rate" and fired.endpoint == "demand-endpoint"
    event = fired.event
    assert event.kind is TriggerKind.ALARM and event.source == "azure.monitor"
    assert event.alarm is not None and event.alarm.state is AlarmState.ALARM
    assert event.alarm.reason == "5xx above 2% for 5 minutes"
    assert event.metadata["severity"] == "Sev2"
    assert event.occurred_at is not None and event.occurred_at.minute == 58
    resolved = copy.deepcopy(ALERT)
    essentials = resolved["data"]["essentials"]
    essentials["monitorCondition"] = "Resolved"
    essentials["resolvedDateTime"] = "2026-12-06T12:20:00Z"
    # A deployment's metric alert names the endpoint too.
    essentials["alertTargetIDs"] = [ENDPOINT_ID + "/deployments/retrain-v3"]
    back = monitor_alert(resolved)
    assert back.event.alarm is not None and back.event.alarm.state is AlarmState.OK
    assert back.endpoint == "demand-endpoint"
    assert back.event.event_id != event.event_id  # fired and resolved are two events
    assert monitor_alert(ALERT).event.event_id == event.event_id  # a redelivery is one


def test_a_non_common_schema_alert_is_refused_with_the_fix() -> None:
    with pytest.raises(UnknownEventShape, match="enable the common alert schema"):
        monitor_alert({"schemaId": "AzureMonitorMetricAlert", "data": {}})
    broken = copy.deepcopy(ALERT)
    broken["data"]["essentials"]["monitorCondition"] = "Maybe"
    with pytest.raises(ValueError, match="Fired or Resolved"):
        monitor_alert(broken)
