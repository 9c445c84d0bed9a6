"""SageMaker Data Capture and Model Monitor ground truth on moto's S3, read into the capture
layout and then by the canary's, the performance monitor's and the drift check's readers."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from activities.aws.capture import S3CaptureSource, data_capture_config
from activities.aws.clients import AwsClients
from activities.drift.performance_window import read_labelled_window
from activities.local.capture import capture_dir
from activities.rollout.window import read_window
from tests.support.aws_harness import Moto
from tests.support.capture_formats import (
    csv_line,
    ground_truth_record,
    put_ground_truth,
    put_sagemaker_capture,
    sagemaker_record,
)
from tests.support.cloud_data import BUCKET, ENDPOINT, sagemaker_settings
from workflows.rollout.models import WindowRef
from workflows.spec.models import ModelSpec, Task

FEATURES = [
    {"name": "age", "kind": "numeric"},
    {"name": "income", "kind": "numeric"},
    {"name": "city", "kind": "categorical"},
]


def spec_for(**capture: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "churn",
            "backend": "sagemaker",
            "sagemaker": sagemaker_settings(capture=capture or {}),
            "features": FEATURES,
            "label": "churned",
            "data": {
                "labelled": f"s3://{BUCKET}/data/labelled",
                "baseline_holdout": f"s3://{BUCKET}/data/baseline.parquet",
                "golden_set": f"s3://{BUCKET}/data/golden.parquet",
            },
        }
    )


def beats(_: str) -> None:
    return None


@pytest.fixture
def s3(moto: Moto) -> AwsClients:
    clients = moto.clients()
    clients.s3.create_bucket(Bucket=BUCKET)
    return clients


def test_the_config_captures_inputs_and_outputs_where_the_settings_say() -> None:
    spec = spec_for(sampling_percentage=20)
    assert spec.sagemaker is not None
    config = data_capture_config(spec.sagemaker)
    assert config == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 20,
        "DestinationS3Uri": f"s3://{BUCKET}/retrain/capture",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {
            "CsvContentTypes": ["text/csv"],
            "JsonContentTypes": ["application/json"],
        },
    }
    off = spec_for(enabled=False).sagemaker
    assert off is not None and data_capture_config(off) is None


def test_capture_and_ground_truth_are_read_as_sagemaker_writes_them(
    s3: AwsClients, tmp_path: Path
) -> None:
    clients = s3
    spec = spec_for()
    assert spec.sagemaker is not None
    now = datetime.now(UTC).replace(microsecond=0)
    when = now - timedelta(minutes=5)
    # The AWS docs' sample shape: CSV in, a CSV probability out; one record with the caller's
    # InferenceId; one JSON request of two rows; one base64 (a content type not listed); one
    # broken line.
    records = [
        sagemaker_record(when, csv_line([35, 52000.0, "paris"]), "0.91", event_id="e-1"),
        sagemaker_record(
            when, csv_line([61, 18000.5, "lyon"]), "0.12", event_id="e-2", inference_id="inf-2"
        ),
        sagemaker_record(
            when,
            json.dumps({"instances": [[44, 30000, "nice"], [23, 41000, "lille"]]}),
            json.dumps({"predictions": [{"score": 0.7}, {"score": 0.2}]}),
            content="JSON",
            event_id="e-3",
        ),
    ]
    encoded = sagemaker_record(when, "", "", event_id="e-4")
    encoded["captureData"]["endpointInput"].update(
        data=base64.b64encode(b"50,60000,metz").decode(), encoding="BASE64"
    )
    encoded["captureData"]["endpointOutput"].update(
        data=base64.b64encode(b"0.55").decode(), encoding="BASE64"
    )
    destination = "retrain/capture"
    put_sagemaker_capture(
        clients.s3,
        BUCKET,
        destination,
        ENDPOINT,
        "v1",
        when,
        [*records, encoded],
    )
    key = put_sagemaker_capture(clients.s3, BUCKET, destination, ENDPOINT, "v2", when, [])
    clients.s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"captureData": 1}\nnot json\n')
    put_ground_truth(
        clients.s3,
        BUCKET,
        "retrain/ground-truth",
        when,
        [
            ground_truth_record("e-1", 1),
            ground_truth_record("inf-2", 0),  # keyed by the caller's inference id
            {
                "groundTruthData": {"data": "1\n0", "encoding": "CSV"},
                "eventMetadata": {"eventId": "e-3"},
                "eventVersion": "0",
            },
            ground_truth_record("e-4", "not-a-label"),
        ],
    )
    source = S3CaptureSource(clients, spec.sagemaker, tmp_path)

    synced = source.sync(spec, now - timedelta(hours=2), now, beats)

    assert synced.answers == 5 and synced.labels == 4
    assert synced.problems == {"invalid_records": 2, "invalid_labels": 1}
    directory = capture_dir(tmp_path, spec)
    assert directory == tmp_path / "capture" / "churn"
    # The canary's reader, by time (a cloud capture has no generation).
    sample = read_window(
        directory,
        WindowRef(variant="v1", generation=7, since=when - timedelta(minutes=1)),
        by_time=True,
    )
    assert sample.size == 5
    assert sorted(sample.score.tolist()) == [0.12, 0.2, 0.55, 0.7, 0.91]
    assert np.nansum(sample.label) == 2 and np.isfinite(sample.label).sum() == 4
    later = WindowRef(variant="v1", generation=0, since=now + timedelta(minutes=1))
    assert read_window(directory, later, by_time=True).size == 0
    # The performance monitor's reader: labelled predictions, by label arrival.
    window = read_labelled_window(
        directory, Task.CLASSIFICATION, now - timedelta(hours=1), now + timedelta(minutes=1)
    )
    assert sorted(window.request_id.tolist()) == ["e-1", "e-3:0", "e-3:1", "inf-2"]
    assert dict(zip(window.request_id.tolist(), window.prediction.tolist(), strict=True)) == {
        "e-1": 1.0, "inf-2": 0.0, "e-3:0": 1.0, "e-3:1": 0.0,
    }  # fmt: skip
    assert window.rows.invalid == 0 and window.rows.unmatched == 0

    # A second sync reads nothing new; a rewritten object is read again, not added twice.
    again = source.sync(spec, now - timedelta(hours=2), now, beats)
    assert again.sources_read == 0 and again.answers == 0
    rewritten = put_sagemaker_capture(
        clients.s3, BUCKET, destination, ENDPOINT, "v3", when, records[:1]
    )
    assert source.sync(spec, now - timedelta(hours=2), now, beats).answers == 1
    clients.s3.put_object(
        Bucket=BUCKET,
        Key=rewritten,
        Body=(json.dumps(records[0]) + "\n" + json.dumps(records[1]) + "\n").encode(),
    )
    assert source.sync(spec, now - timedelta(hours=2), now, beats).answers == 2
    v3 = WindowRef(variant="v3", generation=0, since=when - timedelta(minutes=1))
    assert read_window(directory, v3, by_time=True).size == 2


def test_hours_long_past_are_read_once(s3: AwsClients, tmp_path: Path) -> None:
    clients = s3
    spec = spec_for()
    assert spec.sagemaker is not None
    now = datetime.now(UTC)
    old = now - timedelta(hours=5)
    put_sagemaker_capture(
        clients.s3,
        BUCKET,
        "retrain/capture",
        ENDPOINT,
        "v1",
        old,
        [sagemaker_record(old, csv_line([30, 1.0, "x"]), "0.4")],
    )
    source = S3CaptureSource(clients, spec.sagemaker, tmp_path)
    first = source.sync(spec, now - timedelta(hours=6), now, beats)
    assert first.answers == 1
    second = source.sync(spec, now - timedelta(hours=6), now, beats)
    # Every hour that ended long enough ago is complete (capture and ground truth alike).
    assert second.partitions_skipped >= 8 and second.sources_read == 0
