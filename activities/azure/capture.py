"""Azure ML's data collector output and ground truth, read into the capture layout.

Each deployment collects `model_inputs` and `model_outputs` (set by
`activities/azure/endpoint.py`); Azure ML writes them as JSON Lines blobs on the workspace's
blob datastore, by default under

    modelDataCollector/<endpoint>/<deployment>/<collection>/yyyy/MM/dd/HH/<file>.jsonl

one CloudEvents-shaped record per request and collection: `time`, `correlationid` (the same
in a request's inputs and outputs record), `data` (the rows: a list of objects, as a pandas
DataFrame's records) and `contentrange` (`bytes 0-116/116`; a payload too large for one record
is split, and such partial records are counted, not read). A request's inputs and outputs
rows are joined by correlation id and position; each row is one captured answer of the
deployment's variant (`retrain-v3` -> `v3`), keyed by the input row's `id_field` (the caller's
request id, the key of its ground truth) when it carries one, else by the correlation id
(`<id>:<n>` for a request of several rows). A deployment receiving mirrored traffic is a shadow:
its answers are marked so.

Ground truth: `yyyy/mm/dd/hh/*.jsonl` blobs under the settings' ground-truth prefix in
SageMaker Model Monitor's merge format (`activities/cloud_capture.ground_truth_lines`), a
label's arrival being its blob's last-modified time, as the SageMaker and Vertex backends read
theirs.

`BlobCaptureSource.sync` reads one hour of one deployment at a time (one listing per
collection, the blobs it lists), skips an hour whose blobs' ETags have not changed, and marks an
hour that ended `SETTLE` ago complete, so it is never listed again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from activities.azure.blob_store import BlobStore
from activities.azure.clients import AzureClients
from activities.azure.endpoint import endpoint_call, variant_of
from activities.cloud_capture import (
    CapturedAnswer,
    CaptureProblems,
    CaptureRun,
    PayloadError,
    capture_off,
    prediction_output,
)
from activities.ports import CaptureSync, StoredObject
from workflows.spec.azure import AzureCapture, AzureSettings
from workflows.spec.models import ModelSpec

# The collector flushes its buffer every minute or so; an hour is settled well after that.
SETTLE = timedelta(minutes=20)
INPUTS, OUTPUTS = "model_inputs", "model_outputs"


def records(text: str, source: str, problems: CaptureProblems) -> dict[str, dict[str, Any]]:
    """The complete records of one collector blob, by correlation id."""
    found: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            correlation = str(record["correlationid"])
            rows = record["data"]
            if not isinstance(rows, list):
                rows = [rows]
        except (KeyError, TypeError, ValueError) as error:
            problems.add("invalid_records", f"{source} line {number}: {error}")
            continue
        span = str(record.get("contentrange", ""))
        if span and not _whole(span):
            problems.add("partial_records", f"{source} line {number}: only {span}")
            continue
        found[correlation] = {**record, "data": rows}
    return found


def _whole(span: str) -> bool:
    """`bytes 0-116/116`: the record holds the whole payload."""
    try:
        covered, _, total = span.removeprefix("bytes ").partition("/")
        first, _, last = covered.partition("-")
        return int(first) == 0 and int(last) + 1 == int(total)
    except ValueError:
        return False


def joined_answers(
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    variant: str,
    spec: ModelSpec,
    capture: AzureCapture,
    shadow: bool,
) -> list[CapturedAnswer]:
    """The answers of one request: its inputs rows joined with its outputs rows."""
    rows = [row for row in inputs["data"] if isinstance(row, dict)]
    if len(rows) != len(inputs["data"]):
        raise PayloadError("an inputs row that is not an object of features")
    predictions = [prediction_output(item, spec, capture) for item in outputs["data"]]
    if len(rows) != len(predictions):
        raise PayloadError(f"{len(rows)} input row(s) but {len(predictions)} output row(s)")
    stamp = datetime.fromisoformat(str(inputs["time"]).replace("Z", "+00:00"))
    captured_at = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    base = str(inputs["correlationid"])
    found = []
    for index, (features, (prediction, score)) in enumerate(zip(rows, predictions, strict=True)):
        own = features.get(capture.id_field)
        request_id = (
            str(own) if own not in (None, "") else (f"{base}:{index}" if len(rows) > 1 else base)
        )
        found.append(
            CapturedAnswer(request_id, variant, captured_at, features, prediction, score, shadow)
        )
    return found


class BlobCaptureSource:
    name = "Azure ML data collector"

    def __init__(self, clients: AzureClients, settings: AzureSettings, home: Path) -> None:
        self.clients = clients
        self.settings = settings
        self.home = home
        self.store = BlobStore(clients)

    def collector_prefix(self, deployment: str, collection: str) -> str:
        capture = self.settings.capture
        prefix = capture.prefix if capture is not None else "modelDataCollector"
        return (
            f"az://{self.settings.container}/{prefix}/{self.settings.endpoint_name}"
            f"/{deployment}/{collection}"
        )

    def sync(
        self,
        spec: ModelSpec,
        start: datetime,
        end: datetime,
        heartbeat: Callable[[str], None],
    ) -> CaptureSync:
        capture = self.settings.capture
        if capture is None or not capture.enabled:
            return capture_off(self.home, spec, "the data collector is off in the model's settings")
        deployments = self._deployments()
        truth = f"az://{self.settings.container}/{self.settings.ground_truth_prefix()}"
        with CaptureRun.open(self.home, spec, self.store, start, end, heartbeat, SETTLE) as run:
            for hour in run.hours():
                for deployment, shadow in sorted(deployments.items()):
                    run.partition(
                        f"collector/{deployment}/{hour:%Y/%m/%d/%H}",
                        hour,
                        f"reading {deployment}'s collected data for {hour:%Y-%m-%d %H}:00",
                        self._hour,
                        spec,
                        capture,
                        deployment,
                        shadow,
                        hour,
                        run,
                    )
                run.partition(
                    f"ground-truth/{hour:%Y/%m/%d/%H}",
                    hour,
                    f"reading ground truth {truth} for {hour:%Y-%m-%d %H}:00",
                    run.ground_truth_files,
                    truth,
                    hour,
                    self._text,
                )
        return run.result

    def _text(self, uri: str) -> str:
        data, _ = self.store.read_bytes(uri)
        return data.decode(errors="replace")

    def _deployments(self) -> dict[str, bool]:
        """Our deployments on the endpoint (0% ones included) -> whether mirrored to."""
        name = self.settings.endpoint_name
        with endpoint_call(f"reading online endpoint {name}"):
            try:
                endpoint = self.clients.ml.online_endpoints.get(name)
            except ResourceNotFoundError:
                return {}
        mirrored = {d for d, p in (endpoint.mirror_traffic or {}).items() if p}
        return {
            deployment: deployment in mirrored
            for deployment in {*(endpoint.traffic or {}), *mirrored}
            if variant_of(deployment) is not None
        }

    def _hour(
        self,
        spec: ModelSpec,
        capture: AzureCapture,
        deployment: str,
        shadow: bool,
        hour: datetime,
        run: CaptureRun,
    ) -> None:
        listed: dict[str, list[StoredObject]] = {
            collection: self.store.list(
                f"{self.collector_prefix(deployment, collection)}/{hour:%Y/%m/%d/%H}/"
            )
            for collection in (INPUTS, OUTPUTS)
        }
        source = f"{self.collector_prefix(deployment, '*')}/{hour:%Y/%m/%d/%H}"
        fingerprint = ",".join(f"{o.uri}={o.etag}" for c in (INPUTS, OUTPUTS) for o in listed[c])
        if not fingerprint or run.mirror.fingerprint(source) == fingerprint:
            return
        read: dict[str, dict[str, dict[str, Any]]] = {}
        for collection, blobs in listed.items():
            read[collection] = {}
            for stored in blobs:
                data, _ = self.store.read_bytes(stored.uri)
                read[collection] |= records(data.decode(errors="replace"), stored.uri, run.problems)
                run.result.sources_read += 1
        variant = variant_of(deployment)
        assert variant is not None
        answers: list[CapturedAnswer] = []
        unanswered = 0
        for correlation, inputs in read[INPUTS].items():
            outputs = read[OUTPUTS].get(correlation)
            if outputs is None:
                # A request the model failed (its inputs are collected before it answers), or
                # one whose outputs record landed in the next hour: no answer to read.
                unanswered += 1
                continue
            try:
                answers += joined_answers(inputs, outputs, variant, spec, capture, shadow)
            except (KeyError, TypeError, ValueError) as error:
                run.problems.add("invalid_records", f"{source}: request {correlation}: {error}")
        if unanswered:
            run.result.notes.append(f"{source}: {unanswered} request(s) without an outputs record")
        run.mirror.write_answers(source, fingerprint, answers)
        run.result.answers += len(answers)
