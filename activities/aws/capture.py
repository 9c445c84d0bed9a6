"""SageMaker Data Capture and Model Monitor ground truth on S3, read into the capture layout.

Every endpoint config we create carries `DataCaptureConfig` (`data_capture_config`), so
SageMaker writes each sampled request and response to

    <destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl

one JSON object per line, as in the SageMaker Developer Guide's sample ("Capture data from
real-time endpoint", section "View captured data"):

    {"captureData": {
        "endpointInput": {"observedContentType": "text/csv", "mode": "INPUT",
                          "data": "132,25,113.2,96,269.9,107,,0,0,0,0,0,0,1,0,1,0,0,1",
                          "encoding": "CSV"},
        "endpointOutput": {"observedContentType": "text/csv; charset=utf-8", "mode": "OUTPUT",
                           "data": "0.01076381653547287", "encoding": "CSV"}},
     "eventMetadata": {"eventId": "feca1ab1-8025-47e3-8f6a-99e3fdd7b8d9",
                       "inferenceId": "...", "inferenceTime": "2019-11-20T23:33:12Z"},
     "eventVersion": "0"}

`encoding` is CSV or JSON for the content types the config lists, BASE64 otherwise. A record's
request id is its `inferenceId` (what the caller passed to InvokeEndpoint) or else its
`eventId`: the key Model Monitor merges ground truth on. Ground truth is read from
`<ground_truth>/yyyy/mm/dd/hh/*.jsonl` in Model Monitor's merge format
(`activities.cloud_capture.ground_truth_lines`); a label's arrival time is its object's
LastModified.

`S3CaptureSource.sync` lists one hour prefix per variant at a time (and the ground truth's hour
prefixes), converts each new or changed object (by ETag) into the layout's Parquet files, and
marks an hour complete once it ended `SETTLE` ago, so later syncs skip it. Variants are the
endpoint's prefixes; those DescribeEndpoint lists as shadow variants are captured as shadow
answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from activities.aws.clients import AwsClients
from activities.aws.errors import aws_call, error_code, translate
from activities.aws.s3_store import S3Store, s3_location
from activities.cloud_capture import (
    CaptureProblems,
    CaptureRun,
    PayloadError,
    answers,
    capture_off,
    decode,
    request_rows,
    response_outputs,
)
from activities.ports import CaptureSync
from workflows.spec.models import ModelSpec
from workflows.spec.sagemaker import SageMakerCapture, SageMakerSettings

# How long after an hour ends SageMaker may still add files to its prefix.
SETTLE = timedelta(minutes=20)


def data_capture_config(settings: SageMakerSettings) -> dict[str, Any] | None:
    """The DataCaptureConfig of every endpoint config we create; None when capture is off."""
    capture = settings.capture
    if capture is None or not capture.enabled:
        return None
    return {
        "EnableCapture": True,
        "InitialSamplingPercentage": capture.sampling_percentage,
        "DestinationS3Uri": settings.capture_destination(),
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {
            "CsvContentTypes": list(capture.csv_content_types),
            "JsonContentTypes": list(capture.json_content_types),
        },
    }


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _content(part: dict[str, Any], capture: SageMakerCapture) -> tuple[str, str]:
    """(text, "CSV" | "JSON") of a captured input or output."""
    encoding = str(part.get("encoding", "")).upper()
    text = decode(str(part.get("data", "")), encoding)
    if encoding in ("CSV", "JSON"):
        return text, encoding
    observed = str(part.get("observedContentType", "")).split(";")[0].strip().lower()
    if observed in capture.csv_content_types or observed.endswith("csv"):
        return text, "CSV"
    return text, "JSON"


def capture_records(
    text: str,
    variant: str,
    spec: ModelSpec,
    capture: SageMakerCapture,
    problems: CaptureProblems,
    source: str,
    *,
    shadow: bool = False,
) -> list[Any]:
    """The answers of one Data Capture file (JSON lines); unreadable lines are counted."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            data = record["captureData"]
            meta = record["eventMetadata"]
            request_id = str(meta.get("inferenceId") or meta["eventId"])
            captured_at = parse_time(str(meta["inferenceTime"]))
            if "endpointInput" not in data or "endpointOutput" not in data:
                raise PayloadError("the record lacks its input or its output")
            payload, kind = _content(data["endpointInput"], capture)
            rows = request_rows(payload, kind, spec)
            payload, kind = _content(data["endpointOutput"], capture)
            outputs = response_outputs(payload, kind, spec, capture)
            found += answers(request_id, variant, captured_at, rows, outputs, shadow=shadow)
        except (KeyError, TypeError, ValueError) as error:
            problems.add("invalid_records", f"{source} line {number}: {error}")
    return found


class S3CaptureSource:
    name = "SageMaker Data Capture"

    def __init__(self, clients: AwsClients, settings: SageMakerSettings, home: Path) -> None:
        self.clients = clients
        self.settings = settings
        self.home = home
        self.store = S3Store(clients)

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
                self.home, spec, "SageMaker Data Capture is off in the model's settings"
            )
        root = f"{self.settings.capture_destination()}/{self.settings.endpoint_name}"
        shadow = self._shadow_variants()
        with CaptureRun.open(self.home, spec, self.store, start, end, heartbeat, SETTLE) as run:
            for variant in self._variants(root):
                for hour in run.hours():
                    prefix = f"{root}/{variant}/{hour:%Y/%m/%d/%H}"
                    run.partition(
                        f"capture/{variant}/{hour:%Y/%m/%d/%H}",
                        hour,
                        f"reading {prefix}",
                        self._capture_files,
                        run,
                        prefix,
                        variant,
                        spec,
                        capture,
                        variant in shadow,
                    )
            truth = self.settings.ground_truth_prefix()
            for hour in run.hours():
                run.partition(
                    f"ground-truth/{hour:%Y/%m/%d/%H}",
                    hour,
                    f"reading {truth}/{hour:%Y/%m/%d/%H}",
                    run.ground_truth_files,
                    truth,
                    hour,
                    self._text,
                )
        return run.result

    def _capture_files(
        self,
        run: CaptureRun,
        prefix: str,
        variant: str,
        spec: ModelSpec,
        capture: SageMakerCapture,
        shadow: bool,
    ) -> None:
        """One hour's Data Capture files of one variant, new or changed ones."""
        for stored in self.store.list(f"{prefix}/"):
            if run.mirror.fingerprint(stored.uri) == stored.etag:
                continue
            rows = capture_records(
                self._text(stored.uri),
                variant,
                spec,
                capture,
                run.problems,
                stored.uri,
                shadow=shadow,
            )
            run.mirror.write_answers(stored.uri, stored.etag, rows)
            run.result.sources_read += 1
            run.result.answers += len(rows)

    def _text(self, uri: str) -> str:
        bucket, key = s3_location(uri)
        with aws_call(f"GetObject {uri}"):
            body = self.clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return str(body.decode(errors="replace"))

    def _variants(self, root: str) -> list[str]:
        """The variants SageMaker has written capture for (the prefixes under the endpoint's)."""
        bucket, prefix = s3_location(f"{root}/")
        found: set[str] = set()
        with aws_call(f"ListObjectsV2 s3://{bucket}/{prefix}"):
            pages = self.clients.s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    found.add(common["Prefix"][len(prefix) :].strip("/"))
        return sorted(name for name in found if name)

    def _shadow_variants(self) -> set[str]:
        try:
            described = self.clients.sagemaker.describe_endpoint(
                EndpointName=self.settings.endpoint_name
            )
        except ClientError as error:
            if error_code(error) == "ValidationException":
                return set()  # no endpoint (yet): nothing is shadowed
            raise translate(error, "DescribeEndpoint") from error
        return {v["VariantName"] for v in described.get("ShadowProductionVariants") or []}
