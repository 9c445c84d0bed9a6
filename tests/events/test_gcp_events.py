"""Google Cloud event mappers: realistic Pub/Sub push payloads in, trigger events out."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from starters.events.gcp import gcs_object_finalize, model_monitoring_alert, monitoring_alert
from starters.events.mapped import UnknownEventShape
from workflows.coordinator.triggers import AlarmState, Severity, TriggerKind

SUBSCRIPTION = "projects/retrain-prod/subscriptions/retrain-gateway"


def push(data: dict[str, Any] | None, attributes: dict[str, str] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "attributes": attributes or {},
        "messageId": "9876543210123",
        "message_id": "9876543210123",
        "publishTime": "2026-03-02T10:15:03.512Z",
        "publish_time": "2026-03-02T10:15:03.512Z",
    }
    if data is not None:
        message["data"] = base64.b64encode(json.dumps(data).encode()).decode()
    return {"message": message, "subscription": SUBSCRIPTION}


GCS_OBJECT = {
    "kind": "storage#object",
    "id": "retrain-data/labelled/churn/date=2026-03-02/part-0.parquet/1772446502781234",
    "selfLink": "https://www.googleapis.com/storage/v1/b/retrain-data/o/labelled%2Fchurn%2Fdate%3D2026-03-02%2Fpart-0.parquet",
    "name": "labelled/churn/date=2026-03-02/part-0.parquet",
    "bucket": "retrain-data",
    "generation": "1772446502781234",
    "metageneration": "1",
    "contentType": "application/octet-stream",
    "timeCreated": "2026-03-02T10:15:02.792Z",
    "updated": "2026-03-02T10:15:02.792Z",
    "storageClass": "STANDARD",
    "size": "482113",
    "md5Hash": "7Qdih1MuhjZehB6Sv8UNjA==",
    "crc32c": "yZRlqg==",
    "etag": "CLKw9fTh+4MDEAE=",
}
GCS_ATTRIBUTES = {
    "bucketId": "retrain-data",
    "objectId": "labelled/churn/date=2026-03-02/part-0.parquet",
    "objectGeneration": "1772446502781234",
    "eventType": "OBJECT_FINALIZE",
    "eventTime": "2026-03-02T10:15:02.792000Z",
    "notificationConfig": "projects/_/buckets/retrain-data/notificationConfigs/3",
    "payloadFormat": "JSON_API_V1",
}


def test_gcs_object_finalize_maps_to_data_arrived() -> None:
    mapped = gcs_object_finalize(push(GCS_OBJECT, GCS_ATTRIBUTES))
    uri = "gs://retrain-data/labelled/churn/date=2026-03-02/part-0.parquet"
    assert mapped.uri == uri
    event = mapped.event
    assert event.kind is TriggerKind.DATA_ARRIVED and event.source == "gcp.storage"
    assert event.data is not None and event.data.uri == uri and event.data.size_bytes == 482113
    assert event.occurred_at == datetime(2026, 3, 2, 10, 15, 2, 792000, tzinfo=UTC)
    assert event.metadata == {"generation": "1772446502781234", "etag": "7Qdih1MuhjZehB6Sv8UNjA=="}
    # Redelivered, or the same object notified without a payload: the same event id.
    no_payload = {**GCS_ATTRIBUTES, "payloadFormat": "NONE"}
    assert gcs_object_finalize(push(None, no_payload)).event.event_id == event.event_id
    rewritten = {**GCS_OBJECT, "generation": "1772446599999999"}
    assert gcs_object_finalize(push(rewritten, GCS_ATTRIBUTES)).event.event_id != event.event_id


INCIDENT: dict[str, Any] = {
    "incident": {
        "incident_id": "0.nq2kdm4bd3ox",
        "scoping_project_id": "retrain-prod",
        "scoping_project_number": 482291034556,
        "url": "https://console.cloud.google.com/monitoring/alerting/incidents/0.nq2kdm4bd3ox?project=retrain-prod",
        "started_at": 1772446500,
        "ended_at": None,
        "state": "open",
        "summary": "Conversion rate for retrain-prod Endpoint churn is below the threshold of 0.1.",
        "apigee_url": "",
        "observed_value": "0.072",
        "resource": {
            "type": "aiplatform.googleapis.com/Endpoint",
            "labels": {
                "endpoint_id": "5831924370012749824",
                "location": "us-central1",
                "resource_container": "retrain-prod",
            },
        },
        "resource_type_display_name": "Vertex AI Endpoint",
        "resource_id": "",
        "resource_display_name": "churn",
        "resource_name": "retrain-prod Endpoint churn",
        "metric": {
            "type": "custom.googleapis.com/retrain/conversion_rate",
            "displayName": "conversion_rate",
            "labels": {},
        },
        "metadata": {"system_labels": {}, "user_labels": {}},
        "policy_name": "churn conversion drop",
        "policy_user_labels": {"model": "churn"},
        "documentation": {"content": "Retrain churn.", "mime_type": "text/markdown"},
        "condition": {"name": "projects/retrain-prod/alertPolicies/1/conditions/2"},
        "condition_name": "conversion below 0.1",
        "threshold_value": "0.1",
        "severity": "Critical",
    },
    "version": "1.2",
}


def test_monitoring_incident_maps_to_alarm_from_pubsub_or_webhook() -> None:
    mapped = monitoring_alert(push(INCIDENT))
    assert mapped.alarm == "churn conversion drop" and mapped.endpoint == "5831924370012749824"
    event = mapped.event
    assert event.kind is TriggerKind.ALARM and event.alarm is not None
    assert event.alarm.state is AlarmState.ALARM and "below the threshold" in (
        event.alarm.reason or ""
    )
    assert event.occurred_at == datetime.fromtimestamp(1772446500, tz=UTC)
    assert event.metadata["severity"] == "Critical"
    assert monitoring_alert(INCIDENT).event == event  # a webhook channel posts it as is

    closed = json.loads(json.dumps(INCIDENT))
    closed["incident"] |= {"state": "closed", "ended_at": 1772450100}
    ended = monitoring_alert(push(closed)).event
    assert ended.alarm is not None and ended.alarm.state is AlarmState.OK
    assert ended.event_id != event.event_id


LOCATION = "projects/482291034556/locations/us-central1"
JOB = f"{LOCATION}/modelDeploymentMonitoringJobs/3306017460134887424"
ANOMALY_ENTRY = {
    "insertId": "1x9aq2kf4m3b2c",
    "jsonPayload": {
        "@type": "type.googleapis.com/google.cloud.aiplatform.logging."
        "ModelMonitoringAnomaliesLogEntry",
        "modelDeploymentMonitoringJob": JOB,
        "endpoint": f"{LOCATION}/endpoints/5831924370012749824",
        "statsAnomalies": [
            {
                "objective": "RAW_FEATURE_DRIFT",
                "deployedModelId": "1829374650192837465",
                "anomalyCount": 2,
                "featureStats": [
                    {
                        "featureDisplayName": "charges",
                        "threshold": {"value": 0.3},
                        "predictionStats": [
                            {
                                "distributionDeviation": 0.71,
                                "anomalyDetectionThreshold": 0.3,
                                "startTime": "2026-03-02T09:00:00Z",
                                "endTime": "2026-03-02T10:00:00Z",
                            }
                        ],
                    },
                    {
                        "featureDisplayName": "tenure",
                        "threshold": {"value": 0.3},
                        "predictionStats": [{"distributionDeviation": 0.45}],
                    },
                    {
                        "featureDisplayName": "plan",
                        "threshold": {"value": 0.3},
                        "predictionStats": [{"distributionDeviation": 0.05}],
                    },
                ],
            }
        ],
    },
    "resource": {
        "type": "aiplatform.googleapis.com/ModelDeploymentMonitoringJob",
        "labels": {
            "location": "us-central1",
            "model_deployment_monitoring_job": "3306017460134887424",
            "resource_container": "projects/482291034556",
        },
    },
    "timestamp": "2026-03-02T10:05:11.214Z",
    "severity": "WARNING",
    "logName": "projects/retrain-prod/logs/aiplatform.googleapis.com%2Fmodel_monitoring_anomaly",
    "receiveTimestamp": "2026-03-02T10:05:11.930Z",
}


def test_model_monitoring_anomaly_maps_to_drift() -> None:
    mapped = model_monitoring_alert(push(ANOMALY_ENTRY))
    payload: dict[str, Any] = ANOMALY_ENTRY["jsonPayload"]  # type: ignore[assignment]
    assert mapped.monitoring_job == payload["modelDeploymentMonitoringJob"]
    assert mapped.endpoint == payload["endpoint"]
    drift = mapped.event.drift
    assert mapped.event.kind is TriggerKind.DRIFT and drift is not None
    assert drift.features == ["charges", "tenure"] and drift.score == pytest.approx(0.71)
    assert drift.severity is Severity.HIGH  # 0.71 / 0.3 = 2.4
    assert mapped.event.metadata == {"objectives": ["RAW_FEATURE_DRIFT"]}
    assert model_monitoring_alert(push(payload)).event.drift == drift  # the payload alone
    assert model_monitoring_alert(push(ANOMALY_ENTRY)).event.event_id == mapped.event.event_id


@pytest.mark.parametrize(
    ("mapper", "payload", "message"),
    [
        (gcs_object_finalize, [], "expected a JSON object"),
        (gcs_object_finalize, {"subscription": SUBSCRIPTION}, "not a Pub/Sub push"),
        (gcs_object_finalize, push(GCS_OBJECT, {**GCS_ATTRIBUTES, "eventType": "OBJECT_DELETE"}),
         "OBJECT_FINALIZE"),
        (gcs_object_finalize, {"message": {"data": "not base64!", "attributes": GCS_ATTRIBUTES}},
         "base64"),
        (gcs_object_finalize, push({**GCS_OBJECT, "size": "lots"}, GCS_ATTRIBUTES), "size"),
        (gcs_object_finalize, push({"kind": "storage#object"}, GCS_ATTRIBUTES), "bucket"),
        (gcs_object_finalize, push(None, {"eventType": "OBJECT_FINALIZE"}), "bucketId"),
        (monitoring_alert, push({"version": "1.2"}), "incident"),
        (monitoring_alert, {"incident": {**INCIDENT["incident"], "state": "acked"}}, "state"),
        (monitoring_alert, {"incident": {"incident_id": "x", "state": "open"}}, "policy_name"),
        (monitoring_alert, {"incident": {**INCIDENT["incident"], "started_at": "soon"}}, "number"),
        (model_monitoring_alert, push(None), "missing"),
        (model_monitoring_alert, push({"jsonPayload": {"x": 1}}), "statsAnomalies"),
        (model_monitoring_alert, push({"statsAnomalies": [], "modelDeploymentMonitoringJob": "j"}),
         "no feature"),
        (model_monitoring_alert,
         push({"statsAnomalies": [{"objective": "NOPE"}], "modelDeploymentMonitoringJob": "j"}),
         "objective"),
        (model_monitoring_alert,
         push({"statsAnomalies": "x", "modelDeploymentMonitoringJob": "j"}), "list"),
    ],
)  # fmt: skip
def test_malformed_payloads_are_value_errors(mapper: Any, payload: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mapper(payload)


def test_unknown_shapes_are_unknown_event_shape() -> None:
    with pytest.raises(UnknownEventShape):
        monitoring_alert(push({"something": "else"}))
    with pytest.raises(UnknownEventShape):
        model_monitoring_alert(push({"jsonPayload": {}}))
