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
    CaptureMirror,
    CaptureProblems,
    GroundTruth,
    PayloadError,
    ground_truth_lines,
    hours,
    instances,
    prediction_output,
    reference_schema,
)
from activities.gcp.clients import GcpClients
from activities.gcp.endpoint import deployed_variants, endpoint_client, find_endpoint
from activities.gcp.errors import gcp_call
from activities.gcp.gcs_store import GcsStore, gcs_location
from activities.local.capture import capture_dir
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
        return endpoint_client(self.clients)

    def sync(
        self,
        spec: ModelSpec,
        start: datetime,
        end: datetime,
        heartbeat: Callable[[str], None],
    ) -> CaptureSync:
        directory = capture_dir(self.home, spec)
        capture = self.settings.capture
        result = CaptureSync(directory=directory)
        if capture is None or not capture.enabled:
            result.notes.append("Vertex request-response logging is off in the model's settings")
            return result
        now = datetime.now(UTC)
        end = min(end, now)
        problems = CaptureProblems()
        variants = self._variants()
        table = self.settings.logging_table()
        truth = self.settings.ground_truth_source()
        reference = reference_schema(self.home, spec, self.store)
        with CaptureMirror(directory, spec, reference).open() as mirror:
            for hour in hours(start, end):
                settled = hour + timedelta(hours=1) + SETTLE <= now
                key = f"logging/{hour:%Y/%m/%d/%H}"
                if mirror.is_complete(key):
                    result.partitions_skipped += 1
                else:
                    heartbeat(f"reading {table} for {hour:%Y-%m-%d %H}:00")
                    answers = self._answers(
                        table, hour, variants, spec, capture, problems, result.notes
                    )
                    mirror.write_answers(f"bq://{table}/{hour:%Y%m%d%H}", "", answers)
                    result.sources_read += 1
                    result.answers += len(answers)
                    if settled:
                        mirror.mark_complete(key)
                key = f"ground-truth/{hour:%Y/%m/%d/%H}"
                if mirror.is_complete(key):
                    result.partitions_skipped += 1
                    continue
                heartbeat(f"reading ground truth {truth} for {hour:%Y-%m-%d %H}:00")
                result.labels += self._ground_truth(truth, hour, mirror, problems, result)
                if settled:
                    mirror.mark_complete(key)
        result.problems = problems.counts
        result.notes += problems.messages
        return result

    def _variants(self) -> dict[str, str]:
        """Deployed model id -> variant, from the endpoint (0% variants stay deployed)."""
        endpoint = find_endpoint(self._endpoints, self.settings)
        if endpoint is None:
            return {}
        return {ids: variant for variant, ids in deployed_variants(endpoint).items()}

    def _query(
        self, table: str, columns: str, time_column: str, hour: datetime, notes: list[str]
    ) -> list[Any]:
        from google.cloud import bigquery

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

    def _answers(
        self,
        table: str,
        hour: datetime,
        variants: dict[str, str],
        spec: ModelSpec,
        capture: VertexCapture,
        problems: CaptureProblems,
        notes: list[str],
    ) -> list[CapturedAnswer]:
        found: list[CapturedAnswer] = []
        for row in self._query(table, LOG_COLUMNS, "logging_time", hour, notes):
            record = dict(row.items())
            variant = variants.get(str(record.get("deployed_model_id")))
            if variant is None:
                problems.add(
                    "unknown_deployed_models",
                    f"{table}: request {record.get('request_id')} was answered by deployed "
                    f"model {record.get('deployed_model_id')}, not one of our variants",
                )
                continue
            try:
                found += logged_answers(record, variant, spec, capture)
            except (KeyError, TypeError, ValueError) as error:
                problems.add(
                    "invalid_records", f"{table}: request {record.get('request_id')}: {error}"
                )
        return found

    def _ground_truth(
        self,
        source: str,
        hour: datetime,
        mirror: CaptureMirror,
        problems: CaptureProblems,
        result: CaptureSync,
    ) -> int:
        if source.startswith("bq://"):
            table = source.removeprefix("bq://")
            labels = []
            columns = "request_id, label, received_at"
            for row in self._query(table, columns, "received_at", hour, result.notes):
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
                    problems.add("invalid_labels", f"{table}: {error}")
            mirror.write_labels(f"{source}/{hour:%Y%m%d%H}", "", labels)
            result.sources_read += 1
            return len(labels)
        count = 0
        for stored in self.store.list(f"{source}/{hour:%Y/%m/%d/%H}/"):
            if mirror.fingerprint(stored.uri) == stored.etag:
                continue
            bucket, name = gcs_location(stored.uri)
            with gcp_call(f"reading {stored.uri}"):
                text = self.clients.storage.bucket(bucket).blob(name).download_as_text()
            labels = ground_truth_lines(text, stored.updated, stored.uri, problems)
            mirror.write_labels(stored.uri, stored.etag, labels)
            result.sources_read += 1
            count += len(labels)
        return count
