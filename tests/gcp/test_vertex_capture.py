"""Vertex request-response logging to BigQuery and ground truth (a BigQuery table or a GCS
prefix), through the real google-cloud-bigquery SDK against the fake's REST API, read into the
capture layout and by the canary's and the performance monitor's readers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from activities.drift.performance_window import read_labelled_window
from activities.gcp.capture import BigQueryCaptureSource
from activities.gcp.endpoint import (
    VertexEndpoint,
    deployed_variants,
    find_endpoint,
)
from activities.local.capture import capture_dir
from activities.rollout.window import read_window
from tests.support.capture_formats import ground_truth_record, jsonl, vertex_log_row
from tests.support.cloud_data import BUCKET, vertex_settings
from tests.support.vertex_fake import storage
from tests.support.vertex_fake.server import RunningFake
from tests.support.vertex_harness import fake_clients
from workflows.rollout.models import TrafficChange, WindowRef
from workflows.spec.models import ModelSpec, Task

FEATURES = [
    {"name": "age", "kind": "numeric"},
    {"name": "income", "kind": "numeric"},
    {"name": "city", "kind": "categorical"},
]


def spec_for(fake: RunningFake, **capture: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "churn",
            "backend": "vertex",
            "vertex": vertex_settings(capture=capture),
            "features": FEATURES,
            "label": "churned",
            "data": {
                "labelled": f"gs://{BUCKET}/data/labelled",
                "baseline_holdout": f"gs://{BUCKET}/data/baseline.parquet",
                "golden_set": f"gs://{BUCKET}/data/golden.parquet",
            },
        }
    )


def beats(_: str) -> None:
    return None


def deploy(fake: RunningFake, spec: ModelSpec) -> dict[str, str]:
    """v1 and v2 deployed by our endpoint code; variant -> deployed model id."""
    assert spec.vertex is not None
    clients = fake_clients(fake)
    endpoint = VertexEndpoint(
        clients,
        spec.vertex,
        lambda model, version: f"projects/{spec.vertex.project}/locations/x/models/{version}",  # type: ignore[union-attr]
    )
    for change in (
        TrafficChange(model="churn", endpoint_url="", weights={"v1": 100}, change_id="c/1"),
        TrafficChange(
            model="churn", endpoint_url="", weights={"v1": 90, "v2": 10}, change_id="c/2"
        ),
    ):
        endpoint.set_traffic(change)
    found = find_endpoint(clients.endpoints, spec.vertex)
    assert found is not None
    return deployed_variants(found)


def test_the_endpoint_logs_to_the_settings_table(vertex: RunningFake) -> None:
    spec = spec_for(vertex, sampling_percentage=25)
    deploy(vertex, spec)
    assert spec.vertex is not None
    found = find_endpoint(fake_clients(vertex).endpoints, spec.vertex)
    assert found is not None
    config = found.predict_request_response_logging_config
    assert config.enabled and config.sampling_rate == pytest.approx(0.25)
    assert config.bigquery_destination.output_uri == (
        "bq://retrain-tests.adaptive_retraining.credit_endpoint_requests"
    )
    # Each deployed model autoscales on CPU in percent (Vertex's own unit).
    specs = found.deployed_models[0].dedicated_resources.autoscaling_metric_specs
    assert [(s.metric_name, s.target) for s in specs] == [
        ("aiplatform.googleapis.com/prediction/online/cpu/utilization", 60)
    ]


@pytest.mark.parametrize("truth", ["bigquery", "gcs"])
def test_logged_requests_and_ground_truth_are_read(
    vertex: RunningFake, tmp_path: Path, truth: str
) -> None:
    ground = (
        "bq://retrain-tests.labels.churn_truth"
        if truth == "bigquery"
        else f"gs://{BUCKET}/truth/churn"
    )
    spec = spec_for(vertex, ground_truth=ground)
    assert spec.vertex is not None
    ids = deploy(vertex, spec)
    clients = fake_clients(vertex)
    now = datetime.now(UTC).replace(microsecond=0)
    when = now - timedelta(minutes=3)
    table = spec.vertex.logging_table()
    rows = [
        # The caller's id inside the instance keys its ground truth.
        vertex_log_row(
            "e", ids["v1"], when, 101,
            [{"request_id": "r-1", "age": 35, "income": 52000.0, "city": "paris"}],
            [{"prediction": 1, "score": 0.93}],
        ),
        # Two instances without an id: Vertex's request id and their position key them.
        vertex_log_row(
            "e", ids["v1"], when, 102,
            [[61, 18000.5, "lyon"], [44, 30000, "nice"]],
            [0.12, 0.64],
        ),
        vertex_log_row("e", ids["v2"], when, 103, [[23, 41000, "lille"]], [[0.3, 0.7]]),
        vertex_log_row("e", "999", when, 104, [[1, 2, "x"]], [0.5]),  # not our deployed model
        vertex_log_row("e", ids["v2"], when, 105, [[1, 2, "x"]], []),  # answer missing
    ]  # fmt: skip
    # The platform's writes, through the real SDK's streaming insert.
    assert clients.bigquery.insert_rows_json(table, rows) == []
    labels = [("r-1", 1), ("102:0", 0), ("102:1", 1), ("103", 0)]
    if truth == "bigquery":
        assert (
            clients.bigquery.insert_rows_json(
                "retrain-tests.labels.churn_truth",
                [
                    {"request_id": rid, "label": label, "received_at": now.isoformat()}
                    for rid, label in labels
                ],
            )
            == []
        )
    else:
        storage.create_bucket(vertex.state, BUCKET)
        storage.put_object(
            vertex.state,
            BUCKET,
            f"truth/churn/{now:%Y/%m/%d/%H}/labels.jsonl",
            jsonl(ground_truth_record(rid, label) for rid, label in labels).encode(),
        )
    source = BigQueryCaptureSource(clients, spec.vertex, tmp_path)

    synced = source.sync(spec, now - timedelta(hours=1), now + timedelta(minutes=1), beats)

    assert synced.answers == 4 and synced.labels == 4
    assert synced.problems == {"unknown_deployed_models": 1, "invalid_records": 1}
    directory = capture_dir(tmp_path, spec)
    since = when - timedelta(minutes=1)
    v1 = read_window(directory, WindowRef(variant="v1", generation=0, since=since), by_time=True)
    assert v1.size == 3 and sorted(v1.score.tolist()) == [0.12, 0.64, 0.93]
    assert np.isfinite(v1.label).sum() == 3
    v2 = read_window(directory, WindowRef(variant="v2", generation=0, since=since), by_time=True)
    assert v2.prediction.tolist() == [1.0] and v2.label.tolist() == [0.0]
    window = read_labelled_window(
        directory, Task.CLASSIFICATION, now - timedelta(hours=1), now + timedelta(minutes=1)
    )
    assert sorted(window.request_id.tolist()) == ["102:0", "102:1", "103", "r-1"]
    assert window.rows.unmatched == 0
    # Re-syncing the open hour replaces its file rather than adding to it.
    again = source.sync(spec, now - timedelta(hours=1), now + timedelta(minutes=1), beats)
    assert again.answers == 4
    assert (
        read_window(
            directory, WindowRef(variant="v1", generation=0, since=since), by_time=True
        ).size
        == 3
    )


def test_no_logging_table_yet_is_no_traffic_yet(vertex: RunningFake, tmp_path: Path) -> None:
    """Vertex creates the table with the first logged request: before it, nothing to read."""
    spec = spec_for(vertex)
    assert spec.vertex is not None
    storage.create_bucket(vertex.state, BUCKET)  # the default ground truth's staging bucket
    source = BigQueryCaptureSource(fake_clients(vertex), spec.vertex, tmp_path)
    now = datetime.now(UTC)
    synced = source.sync(spec, now - timedelta(minutes=30), now, beats)
    assert synced.answers == 0 and synced.labels == 0
    assert any("does not exist yet" in note for note in synced.notes)
