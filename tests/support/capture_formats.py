"""The clouds' capture records, written exactly as the platforms write them, for tests.

SageMaker Data Capture: one JSON object per line under
`<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/`, as the SageMaker Developer Guide shows it
("Capture data from real-time endpoint", "View captured data"):

    {"captureData": {"endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
                                       "data": "132,25,113.2,...", "encoding": "CSV"},
                     "endpointOutput": {"observedContentType": "text/csv; charset=utf-8",
                                        "mode": "OUTPUT", "data": "0.0107638", "encoding": "CSV"}},
     "eventMetadata": {"eventId": "feca1ab1-...", "inferenceTime": "2019-11-20T23:33:12Z"},
     "eventVersion": "0"}

Model Monitor ground truth (SageMaker Developer Guide, "Ingest Ground Truth labels and merge
them with predictions"): `{"groundTruthData": {"data": "1", "encoding": "CSV"},
"eventMetadata": {"eventId": "..."}, "eventVersion": "0"}` per line, under
`<ground truth prefix>/yyyy/mm/dd/hh/`.

Vertex request-response logging rows (BigQuery): `endpoint`, `deployed_model_id`,
`logging_time`, `request_id` (NUMERIC), `request_payload` and `response_payload` (REPEATED
STRING, one JSON document per instance / prediction).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def csv_line(values: Iterable[Any]) -> str:
    return ",".join("" if value is None else str(value) for value in values)


def sagemaker_record(
    when: datetime,
    request: str,
    response: str,
    *,
    content: str = "CSV",
    event_id: str | None = None,
    inference_id: str | None = None,
) -> dict[str, Any]:
    """One Data Capture record; `content` CSV or JSON, as the config's content types say."""
    input_type = "text/csv" if content == "CSV" else "application/json"
    output_type = "text/csv; charset=utf-8" if content == "CSV" else "application/json"
    metadata: dict[str, Any] = {
        "eventId": event_id or str(uuid.uuid4()),
        "inferenceTime": rfc3339(when),
    }
    if inference_id is not None:
        metadata["inferenceId"] = inference_id
    return {
        "captureData": {
            "endpointInput": {
                "observedContentType": input_type,
                "mode": "INPUT",
                "data": request,
                "encoding": content,
            },
            "endpointOutput": {
                "observedContentType": output_type,
                "mode": "OUTPUT",
                "data": response,
                "encoding": content,
            },
        },
        "eventMetadata": metadata,
        "eventVersion": "0",
    }


def ground_truth_record(event_id: str, label: Any) -> dict[str, Any]:
    return {
        "groundTruthData": {"data": str(label), "encoding": "CSV"},
        "eventMetadata": {"eventId": event_id},
        "eventVersion": "0",
    }


def jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def hour_key(prefix: str, when: datetime, name: str) -> str:
    """`<prefix>/yyyy/mm/dd/hh/<name>`: how SageMaker partitions capture and ground truth."""
    return f"{prefix.rstrip('/')}/{when.astimezone(UTC):%Y/%m/%d/%H}/{name}"


def put_sagemaker_capture(
    s3: Any,
    bucket: str,
    destination_key: str,
    endpoint: str,
    variant: str,
    when: datetime,
    records: list[dict[str, Any]],
) -> str:
    """Write one capture file where SageMaker would, returning its key."""
    stamp = when.astimezone(UTC).strftime("%M-%S-%f")
    key = hour_key(f"{destination_key}/{endpoint}/{variant}", when, f"{stamp}-{uuid.uuid4()}.jsonl")
    s3.put_object(Bucket=bucket, Key=key, Body=jsonl(records).encode())
    return key


def put_ground_truth(
    s3: Any, bucket: str, prefix_key: str, when: datetime, records: list[dict[str, Any]]
) -> str:
    key = hour_key(prefix_key, when, f"labels-{uuid.uuid4()}.jsonl")
    s3.put_object(Bucket=bucket, Key=key, Body=jsonl(records).encode())
    return key


def vertex_log_row(
    endpoint_id: str,
    deployed_model_id: str,
    when: datetime,
    request_id: int,
    instances: list[Any],
    predictions: list[Any],
) -> dict[str, Any]:
    """One row of Vertex's request-response logging table."""
    return {
        "endpoint": endpoint_id,
        "deployed_model_id": deployed_model_id,
        "logging_time": when.astimezone(UTC).isoformat(),
        "request_id": str(request_id),
        "request_payload": [json.dumps(instance) for instance in instances],
        "response_payload": [json.dumps(prediction) for prediction in predictions],
    }
