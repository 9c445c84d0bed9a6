"""Vertex request-response logging (BigQuery) and ground truth, read into the capture layout.

The endpoint logs to BigQuery (`predictRequestResponseLoggingConfig`, set by
`activities/gcp/endpoint.py` from the settings): one row per request with `endpoint`,
`deployed_model_id`, `logging_time` (TIMESTAMP), `request_id` (NUMERIC, Vertex's),
`request_payload` and `response_payload` (REPEATED STRING: one JSON document per instance and
per prediction). A row's deployed model is its variant (our deployed models are named `v3`,
`v4`); each instance is one captured answer, keyed by its `id_field` when it carries one (the
caller's id, the key of its ground truth), else by Vertex's request id (`<id>:<n>` when the
request held several instances).

Ground truth comes from the settings' source: a BigQuery table with `request_id`, `label` and
`received_at` (read by `received_at`), or a gs:// prefix of `yyyy/mm/dd/hh/*.jsonl` files in
SageMaker Model Monitor's merge format (a label's arrival is its object's update time).

`BigQueryCaptureSource.sync` reads one hour at a time: one parameterised query per hour of
the logging table (and of a ground-truth table), or one listing per hour prefix; an hour that
ended `SETTLE` ago is marked complete and never queried again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc

from activities.cloud_capture import (
    CapturedAnswer,
    CaptureRun,
    GroundTruth,
    PayloadError,
    capture_off,
    instances,
    prediction_output,
)
from activities.gcp.clients import GcpClients
from activities.gcp.endpoint import deployed_variants, find_endpoint
from activities.gcp.errors import gcp_call
from activities.gcp.gcs_store import GcsStore, gcs_location
from activities.ports import CaptureSync
from workflows.spec.models import ModelSpec
from workflows.spec.vertex import VertexCapture, VertexSettings

# Vertex streams log rows into BigQuery within seconds; an hour is settled well after that.
SETTLE = timedelta(minutes=20)
LOG_COLUMNS = "deployed_model_id, logging_time, request_id, request_payload, response_payload"


def hour_query(table: str, columns: str, time_column: str) -> str:
    """The one query shape we send: an hour of `table` by `time_column` (@start, @end)."""
    return f"SELECT {columns} FROM `{table}` WHERE {time_column} >= @start AND {time_column} < @end"


def logged_answers(
    row: dict[str, Any],
    variant: str,
    spec: ModelSpec,
    capture: VertexCapture,
) -> list[CapturedAnswer]:
    """The answers of one logging row."""
    documents = [json.loads(text) for text in row.get("request_payload") or []]
    rows = instances(documents, spec.feature_names) if documents else []
    predictions = row.get("response_payload") or []
    # One JSON document per prediction (a list there is one answer's class probabilities).
    outputs = [prediction_output(json.loads(text), spec, capture) for text in predictions]
    if len(rows) != len(outputs):
        raise PayloadError(f"{len(rows)} instance(s) but {len(outputs)} prediction(s)")
    logged_at = row["logging_time"]
    captured_at = logged_at if logged_at.tzinfo else logged_at.replace(tzinfo=UTC)
    base = str(row.get("request_id"))
    found = []
    for index, (features, (prediction, score)) in enumerate(zip(rows, outputs, strict=True)):
        own = features.get(capture.id_field)
        request_id = (
            str(own) if own not in (None, "") else (f"{base}:{index}" if len(rows) > 1 else base)
        )
        found.append(CapturedAnswer(request_id, variant, captured_at, features, prediction, score))
    return found


class BigQueryCaptureSource:
    name = "Vertex AI request-response logging"

    def __init__(self, clients: GcpClients, settings: VertexSettings, home: Path) -> None:
        self.clients = clients
        self.settings = settings
        self.home = home
        self.store = GcsStore(clients)

    @cached_property
    def _endpoints(self) -> Any:
        return self.clients.endpoints

    def sync(
        self,
        spec: ModelSpec,
        start: datetime,
        end: datetime,
        heartbeat: Callable[[str], None],
    ) -> CaptureSync:
        capture = self.settings.capture
        if capture is None or not capture.enabled:
            return capture_off(
                self.home, spec, "Vertex request-response logging is off in the model's settings"
            )
        variants = self._variants()
        table = self.settings.logging_table()
        truth = self.settings.ground_truth_source()
        with CaptureRun.open(self.home, spec, self.store, start, end, heartbeat, SETTLE) as run:
            for hour in run.hours():
                run.partition(
                    f"logging/{hour:%Y/%m/%d/%H}",
                    hour,
                    f"reading {table} for {hour:%Y-%m-%d %H}:00",
                    self._logging_hour,
                    table,
                    hour,
                    variants,
                    spec,
                    capture,
                    run,
                )
                run.partition(
                    f"ground-truth/{hour:%Y/%m/%d/%H}",
                    hour,
                    f"reading ground truth {truth} for {hour:%Y-%m-%d %H}:00",
                    self._ground_truth,
                    truth,
                    hour,
                    run,
                )
        return run.result

    def _variants(self) -> dict[str, str]:
        """Deployed model id -> variant, from the endpoint (0% variants stay deployed)."""
        endpoint = find_endpoint(self._endpoints, self.settings)
        if endpoint is None:
            return {}
        return {ids: variant for variant, ids in deployed_variants(endpoint).items()}

    def _query(
        self, table: str, columns: str, time_column: str, hour: datetime, notes: list[str]
    ) -> list[Any]:
        import google.cloud.bigquery as bigquery

        config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("start", "TIMESTAMP", hour),
                bigquery.ScalarQueryParameter("end", "TIMESTAMP", hour + timedelta(hours=1)),
            ]
        )
        with gcp_call(f"querying {table} for {hour:%Y-%m-%d %H}:00"):
            try:
                return list(
                    # No SDK retry: the activity's Temporal retry policy backs off, visibly.
                    self.clients.bigquery.query_and_wait(
                        hour_query(table, columns, time_column),
                        job_config=config,
                        retry=None,
                        job_retry=None,
                    )
                )
            except gexc.NotFound:
                # Vertex creates the logging table with the first request it logs.
                note = f"{table} does not exist yet: nothing logged there"
                if note not in notes:
                    notes.append(note)
                return []

    def _logging_hour(
        self,
        table: str,
        hour: datetime,
        variants: dict[str, str],
        spec: ModelSpec,
        capture: VertexCapture,
        run: CaptureRun,
    ) -> None:
        found: list[CapturedAnswer] = []
        for row in self._query(table, LOG_COLUMNS, "logging_time", hour, run.result.notes):
            record = dict(row.items())
            variant = variants.get(str(record.get("deployed_model_id")))
            if variant is None:
                run.problems.add(
                    "unknown_deployed_models",
                    f"{table}: request {record.get('request_id')} was answered by deployed "
                    f"model {record.get('deployed_model_id')}, not one of our variants",
                )
                continue
            try:
                found += logged_answers(record, variant, spec, capture)
            except (KeyError, TypeError, ValueError) as error:
                run.problems.add(
                    "invalid_records", f"{table}: request {record.get('request_id')}: {error}"
                )
        run.mirror.write_answers(f"bq://{table}/{hour:%Y%m%d%H}", "", found)
        run.result.sources_read += 1
        run.result.answers += len(found)

    def _ground_truth(self, source: str, hour: datetime, run: CaptureRun) -> None:
        if not source.startswith("bq://"):
            run.ground_truth_files(source, hour, self._text)
            return
        table = source.removeprefix("bq://")
        labels = []
        columns = "request_id, label, received_at"
        for row in self._query(table, columns, "received_at", hour, run.result.notes):
            try:
                received = row["received_at"]
                labels.append(
                    GroundTruth(
                        str(row["request_id"]),
                        float(row["label"]),
                        received if received.tzinfo else received.replace(tzinfo=UTC),
                    )
                )
            except (KeyError, TypeError, ValueError) as error:
                run.problems.add("invalid_labels", f"{table}: {error}")
        run.mirror.write_labels(f"{source}/{hour:%Y%m%d%H}", "", labels)
        run.result.sources_read += 1
        run.result.labels += len(labels)

    def _text(self, uri: str) -> str:
        bucket, name = gcs_location(uri)
        with gcp_call(f"reading {uri}"):
            text: str = self.clients.storage.bucket(bucket).blob(name).download_as_text()
        return text
