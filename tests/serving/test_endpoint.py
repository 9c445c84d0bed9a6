"""The local prediction endpoint over real HTTP: routing, shadow, capture, feedback, admin.

One module-wide retrain home holds a model with three registered versions (v1 logistic
regression, the champion; v2 gradient boosting; v3 a model whose predictions raise); each test
starts from a fresh endpoint state and capture directory of that model.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from activities.local.capture import (
    FEEDBACK,
    FEEDBACK_SCHEMA,
    REQUESTS,
    capture_dir,
    partitions_since,
    request_schema,
)
from activities.local.endpoint import (
    ADMIN_TOKEN_ENV,
    LocalEndpoint,
    admin_token,
    admin_token_file,
)
from activities.local.registry import MlflowRegistry
from activities.loop.data_window import resolve_uri
from activities.specs import SpecStore
from serving.app import NOT_DEPLOYED, EndpointError, create_app
from serving.capture import CaptureBuffer, CaptureError
from serving.config import EndpointConfig
from starters.cli.serve import endpoint_port
from starters.demo.synthetic import write_demo_dataset
from tests.support.endpoint_harness import (
    ADMIN_HEADERS,
    FailingModel,
    demo_features,
    register_estimator,
    running_endpoint,
    send_requests,
    train_versions,
)
from workflows.rollout.models import EndpointState
from workflows.spec.models import ModelSpec

MODEL = "endpoint-test"
SEED = 20260301
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*")


class Trained:
    def __init__(self, home: Path, spec: ModelSpec) -> None:
        self.home = home
        self.spec = spec
        self.capture = capture_dir(home, spec)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    home = tmp_path_factory.mktemp("endpoint-home")
    spec, versions = train_versions(home, MODEL, count=2)
    assert [v.version for v in versions] == ["1", "2"]
    failing = register_estimator(home, MODEL, FailingModel(), f"retrain-{MODEL}-3")
    assert failing.version == "3"
    return Trained(home, spec)


@pytest.fixture
def config(trained: Trained) -> EndpointConfig:
    """A fresh endpoint of the trained model: no persisted weights, nothing captured."""
    shutil.rmtree(trained.home / "endpoints", ignore_errors=True)
    shutil.rmtree(trained.capture, ignore_errors=True)
    # Tests flush explicitly (POST /admin/flush) or by shutting down.
    return EndpointConfig(home=trained.home, model=MODEL, seed=SEED, capture_flush_seconds=600)


@pytest.fixture
def http() -> Any:
    with httpx.Client(timeout=30, headers=ADMIN_HEADERS) as client:
        yield client


RETRAIN = str(Path(sys.executable).parent / "retrain")


def put_weights(
    http: httpx.Client,
    url: str,
    weights: dict[str, Any],
    change_id: str,
    shadow: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"weights": weights, "change_id": change_id}
    if shadow is not None:
        body["shadow"] = shadow
    return http.put(f"{url}/admin/weights", json=body)


def flush(http: httpx.Client, url: str) -> dict[str, int]:
    response = http.post(f"{url}/admin/flush")
    assert response.status_code == 200, response.text
    counts: dict[str, int] = response.json()
    return counts


def captured(trained: Trained, kind: str) -> pa.Table:
    files = partitions_since(trained.capture, kind, datetime(2000, 1, 1, tzinfo=UTC))
    assert files, f"nothing captured under {trained.capture / kind}"
    return pa.concat_tables([pq.read_table(file) for file in files])


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when the series does not exist)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


# ---- predictions and routing -----------------------------------------------------------------


def test_serves_the_champion_at_100_percent_from_the_start(
    config: EndpointConfig, http: httpx.Client
) -> None:
    with running_endpoint(config) as url:
        state = EndpointState.model_validate(http.get(f"{url}/admin/weights").json())
        assert (state.weights, state.shadow, state.generation) == ({"v1": 100}, None, 1)
        assert (state.change_id, state.variants) == ("initial", {"v1": "1"})
        assert http.get(f"{url}/healthz").json() == {
            "status": "ok",
            "model": MODEL,
            "generation": 1,
            "deployed": True,
        }
        features = demo_features(1)[0]
        response = http.post(
            f"{url}/invocations", json={"features": features, "request_id": "req-1"}
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer.keys() == {"request_id", "variant", "version", "prediction", "score"}
    assert (answer["request_id"], answer["variant"], answer["version"]) == ("req-1", "v1", "1")
    assert answer["prediction"] in (0, 1) and 0 <= answer["score"] <= 1
    assert response.headers["X-Request-Id"] == "req-1"
    assert response.headers["X-Variant"] == "v1"
    assert config.state_file.is_file()


def test_weighted_routing_follows_the_weights_and_metrics_show_each_variant(
    config: EndpointConfig, trained: Trained, http: httpx.Client
) -> None:
    n = 400
    with running_endpoint(config) as url:
        changed = put_weights(http, url, {"v1": 70, "v2": 30}, "split-70-30")
        assert changed.status_code == 200, changed.text
        assert changed.json()["generation"] == 2
        responses = send_requests(url, n, seed=1, concurrency=4, client=http)
        counts = dict(Counter(r.headers["X-Variant"] for r in responses))
        assert all(r.status_code == 200 for r in responses)
        assert all(r.json()["variant"] == r.headers["X-Variant"] for r in responses)
        metrics = http.get(f"{url}/metrics").text
        assert flush(http, url) == {"requests": n, "feedback": 0}

    # Binomial(400, 0.3): 4.5 standard deviations either side (the seed fixes the draw anyway).
    tolerance = 4.5 * math.sqrt(n * 0.3 * 0.7)
    assert abs(counts.get("v2", 0) - n * 0.3) < tolerance, counts
    for variant in ("v1", "v2"):
        live = {"model": MODEL, "variant": variant, "shadow": "false"}
        assert metric(metrics, "retrain_endpoint_requests_total", **live) == counts[variant]
        assert metric(metrics, "retrain_endpoint_latency_seconds_count", **live) == counts[variant]
        assert metric(metrics, "retrain_endpoint_errors_total", **live) == 0
    assert metric(metrics, "retrain_endpoint_weight", model=MODEL, variant="v1") == 70
    assert metric(metrics, "retrain_endpoint_weight", model=MODEL, variant="v2") == 30
    assert metric(metrics, "retrain_endpoint_generation", model=MODEL) == 2

    table = captured(trained, REQUESTS)
    assert table.num_rows == n
    assert set(table["generation"].to_pylist()) == {2}
    by_id = {r.json()["request_id"]: r.json() for r in responses}
    for row in table.select(["request_id", "variant", "prediction", "score"]).to_pylist():
        answer = by_id[row["request_id"]]
        assert (row["variant"], row["prediction"]) == (answer["variant"], answer["prediction"])
        assert row["score"] == pytest.approx(answer["score"])


def test_capture_files_follow_the_layout_and_schema(
    config: EndpointConfig, trained: Trained, http: httpx.Client
) -> None:
    rows = demo_features(5, seed=3)
    with running_endpoint(config) as url:
        for i, features in enumerate(rows):
            body = {"features": features, "request_id": f"cap-{i}"}
            assert http.post(f"{url}/invocations", json=body).status_code == 200
        assert flush(http, url) == {"requests": 5, "feedback": 0}
        assert flush(http, url) == {"requests": 0, "feedback": 0}

    today = datetime.now(UTC).date().isoformat()
    files = sorted((trained.capture / REQUESTS).rglob("*.parquet"))
    assert [f.parent.name for f in files] == [f"date={today}"]
    assert files[0].name.startswith("part-") and files[0].name.count("-") == 2
    reference = pq.read_schema(resolve_uri(trained.home, trained.spec.data.baseline_holdout))
    table = pq.read_table(files[0])
    assert table.schema.remove_metadata().equals(request_schema(trained.spec, reference))
    records = sorted(table.to_pylist(), key=lambda r: r["request_id"])
    for i, (record, features) in enumerate(zip(records, rows, strict=True)):
        assert record["request_id"] == f"cap-{i}"
        assert (record["variant"], record["version"], record["shadow"]) == ("v1", "1", False)
        assert (record["generation"], record["status_code"], record["error"]) == (1, 200, None)
        assert record["latency_ms"] > 0
        assert record["captured_at"].tzinfo is not None
        assert {name: record[name] for name in features} == features
    # Integer features stay integers, as in the training data.
    assert table.schema.field("age").type == pa.int64()


def test_shadow_answers_are_captured_but_never_returned(
    config: EndpointConfig, trained: Trained, http: httpx.Client
) -> None:
    n = 30
    with running_endpoint(config) as url:
        change = put_weights(http, url, {"v1": 100, "v2": 0}, "shadow-v2", shadow="v2")
        assert change.status_code == 200, change.text
        state = change.json()
        assert (state["weights"], state["shadow"]) == ({"v1": 100}, "v2")
        assert state["variants"] == {"v1": "1", "v2": "2"}
        responses = send_requests(url, n, seed=2, client=http)
        assert {r.headers["X-Variant"] for r in responses} == {"v1"}
        assert {r.json()["variant"] for r in responses} == {"v1"}
        assert flush(http, url)["requests"] == 2 * n
        metrics = http.get(f"{url}/metrics").text

    table = captured(trained, REQUESTS)
    live = table.filter(pc.invert(table["shadow"])).to_pylist()
    shadow = table.filter(table["shadow"]).to_pylist()
    assert {r["variant"] for r in live} == {"v1"} and {r["variant"] for r in shadow} == {"v2"}
    ids = {r.json()["request_id"] for r in responses}
    assert {r["request_id"] for r in live} == ids == {r["request_id"] for r in shadow}
    assert {r["generation"] for r in shadow} == {2}
    assert all(r["status_code"] == 200 and r["prediction"] in (0, 1) for r in shadow)
    labels = {"model": MODEL, "variant": "v2", "shadow": "true"}
    assert metric(metrics, "retrain_endpoint_requests_total", **labels) == n


def test_a_model_exception_is_a_captured_500_and_a_failing_shadow_is_invisible(
    config: EndpointConfig, trained: Trained, http: httpx.Client
) -> None:
    features = demo_features(1)[0]
    with running_endpoint(config) as url:
        assert put_weights(http, url, {"v3": 100}, "all-broken").status_code == 200
        failed = http.post(f"{url}/invocations", json={"features": features, "request_id": "e1"})
        assert put_weights(http, url, {"v1": 100}, "shadow-broken", shadow="v3").status_code == 200
        mirrored = http.post(f"{url}/invocations", json={"features": features, "request_id": "e2"})
        assert flush(http, url)["requests"] == 3
        metrics = http.get(f"{url}/metrics").text
        assert http.get(f"{url}/healthz").status_code == 200

    assert failed.status_code == 500
    assert "deliberate failure" in failed.json()["error"]
    assert (failed.json()["variant"], failed.headers["X-Variant"]) == ("v3", "v3")
    assert mirrored.status_code == 200 and mirrored.json()["variant"] == "v1"
    rows = {(r["request_id"], r["shadow"]): r for r in captured(trained, REQUESTS).to_pylist()}
    error_row = rows[("e1", False)]
    assert (error_row["status_code"], error_row["variant"], error_row["prediction"]) == (
        500,
        "v3",
        None,
    )
    assert "RuntimeError: deliberate failure" in error_row["error"]
    assert rows[("e2", False)]["status_code"] == 200
    assert rows[("e2", True)]["status_code"] == 500 and rows[("e2", True)]["variant"] == "v3"
    for shadow in ("false", "true"):
        labels = {"model": MODEL, "variant": "v3", "shadow": shadow}
        assert metric(metrics, "retrain_endpoint_errors_total", **labels) == 1
    assert metric(metrics, "retrain_endpoint_errors_total", variant="v1") == 0


# ---- bad requests ------------------------------------------------------------------------


def test_bad_requests_get_a_clear_4xx_are_counted_and_never_captured(
    config: EndpointConfig, http: httpx.Client
) -> None:
    good = demo_features(1)[0]
    cases: list[tuple[str, dict[str, Any], int, str, str]] = [
        ("malformed", {"content": b'{"features": '}, 400, "malformed_json", "not valid JSON"),
        ("NaN token", {"content": b'{"features": {"age": NaN}}'}, 400, "malformed_json", "NaN"),
        ("array", {"json": [good]}, 400, "not_an_object", "JSON object"),
        ("no features", {"json": {"request_id": "x"}}, 400, "invalid_body", "features"),
        ("features list", {"json": {"features": [1, 2]}}, 400, "invalid_body", "features"),
        ("extra field", {"json": {"features": good, "x": 1}}, 400, "invalid_body", "x"),
        (
            "bad request id",
            {"json": {"features": good, "request_id": "../etc/passwd"}},
            400,
            "invalid_request_id",
            "request_id",
        ),
        (
            "missing",
            {"json": {"features": {k: v for k, v in good.items() if k not in ("age", "loan")}}},
            422,
            "missing_features",
            "missing features: age, loan",
        ),
        (
            "unknown",
            {"json": {"features": {**good, "colour": 1, "mood": 2}}},
            422,
            "unknown_features",
            "unknown features: colour, mood",
        ),
        (
            "string number",
            {"json": {"features": {**good, "salary": "50000"}}},
            422,
            "invalid_feature_value",
            "salary: must be a number",
        ),
        (
            "bool for integer",
            {"json": {"features": {**good, "elevel": True}}},
            422,
            "invalid_feature_value",
            "elevel: must be an integer",
        ),
        (
            "fraction for integer",
            {"json": {"features": {**good, "age": 30.5}}},
            422,
            "invalid_feature_value",
            "age: must be an integer",
        ),
        (
            "overflowing float",
            {
                "content": json.dumps({"features": {**good, "loan": 1}})
                .replace('"loan": 1', '"loan": 1e400')
                .encode()
            },
            422,
            "invalid_feature_value",
            "loan: must be finite",
        ),
        (
            "null",
            {"json": {"features": {**good, "car": None}}},
            422,
            "invalid_feature_value",
            "car: must be an integer",
        ),
        (
            "nested too deeply",
            {"content": b"[" * 50_000},
            400,
            "malformed_json",
            "nested too deeply",
        ),
        (
            "too large (declared)",
            {"content": b" " * (config.max_body_bytes + 1)},
            413,
            "body_too_large",
            "at most",
        ),
        (
            "too large (chunked)",
            {"content": iter([b" " * 40_000, b" " * 40_000])},
            413,
            "body_too_large",
            "at most",
        ),
    ]
    with running_endpoint(config) as url:
        for name, request, status, _reason, fragment in cases:
            response = http.post(f"{url}/invocations", **request)
            assert response.status_code == status, (name, response.text)
            assert fragment in response.json()["error"], (name, response.json())
        metrics = http.get(f"{url}/metrics").text
        assert flush(http, url)["requests"] == 0
        # Still serving.
        assert http.post(f"{url}/invocations", json={"features": good}).status_code == 200

    expected = Counter(reason for _, _, _, reason, _ in cases)
    for reason, count in expected.items():
        value = metric(metrics, "retrain_endpoint_bad_requests_total", model=MODEL, reason=reason)
        assert value == count, reason
    assert metric(metrics, "retrain_endpoint_requests_total", variant="v1") == 0


def test_a_full_batch_is_written_without_being_asked(
    config: EndpointConfig, trained: Trained, http: httpx.Client
) -> None:
    batched = EndpointConfig(
        home=config.home, model=MODEL, seed=SEED, capture_batch_rows=5, capture_flush_seconds=600
    )
    with running_endpoint(batched) as url:
        send_requests(url, 12, client=http)
        # The flusher runs in the background: wait for it (no assertion on how long it took).
        for _ in range(1000):
            files = list((trained.capture / REQUESTS).rglob("*.parquet"))
            # At least the first full batch; later rows may ride along or wait for shutdown.
            if sum(pq.read_metadata(f).num_rows for f in files) >= 5:
                break
            time.sleep(0.01)
        else:
            pytest.fail("full batches were not written")
    # Shutdown wrote the rest.
    assert captured(trained, REQUESTS).num_rows == 12


def test_a_failed_capture_write_keeps_its_rows_for_the_next_flush(tmp_path: Path) -> None:
    schema = pa.schema([("request_id", pa.string()), ("received_at", pa.timestamp("us", "UTC"))])
    blocked = tmp_path / "capture"
    blocked.write_text("a file where the capture directory should be")
    buffer = CaptureBuffer(blocked, FEEDBACK, schema, "received_at", batch_rows=10, max_rows=10)
    now = datetime.now(UTC)
    for i in range(3):
        buffer.append({"request_id": f"r{i}", "received_at": now})
    with pytest.raises(CaptureError, match="cannot write 3 feedback rows"):
        buffer.flush()
    assert buffer.pending() == 3
    blocked.unlink()
    assert buffer.flush() == 3
    assert pq.read_table(next(blocked.rglob("*.parquet"))).num_rows == 3


# ---- feedback ----------------------------------------------------------------------------


def test_feedback_attaches_to_answered_requests_also_after_a_restart(
    trained: Trained, config: EndpointConfig, http: httpx.Client
) -> None:
    # A tiny index: the oldest ids are found among the rows not yet written, then on disk.
    small = EndpointConfig(
        home=config.home,
        model=MODEL,
        seed=SEED,
        capture_flush_seconds=600,
        feedback_index_size=2,
    )
    ids = [f"fb-{i}" for i in range(6)]
    with running_endpoint(small) as url:
        send_requests(url, len(ids), request_ids=ids, client=http)
        single = http.post(f"{url}/feedback", json={"request_id": "fb-0", "label": 1})
        assert (single.status_code, single.json()) == (200, {"accepted": 1}), single.text
        batch = [{"request_id": i, "label": 0} for i in ids[1:3]]
        assert http.post(f"{url}/feedback", json={"labels": batch}).json() == {"accepted": 2}
        # One unknown id costs only its own label: the others are recorded, it is named.
        mixed = [{"request_id": "fb-3", "label": 1}, {"request_id": "never-seen", "label": 1}]
        partial = http.post(f"{url}/feedback", json={"labels": mixed})
        assert partial.status_code == 200, partial.text
        assert partial.json()["accepted"] == 1 and partial.json()["unknown"] == ["never-seen"]
        assert "fb-3" not in partial.json()["warning"]
        # Every id unknown: nothing to record, refused naming them.
        refused = http.post(f"{url}/feedback", json={"labels": mixed[1:]})
        assert refused.status_code == 404 and "never-seen" in refused.json()["error"]
        invalid: list[tuple[dict[str, Any], int]] = [
            ({"json": {"request_id": "fb-3", "label": True}}, 422),
            ({"json": {"request_id": "fb-3", "label": "1"}}, 422),
            ({"json": {"request_id": "fb-3"}}, 422),
            ({"json": {"request_id": "fb 3", "label": 1}}, 422),
            ({"json": {"labels": []}}, 422),
            ({"content": b'{"request_id": "fb-3", "label": NaN}'}, 400),
            ({"json": {"labels": [{"request_id": "fb-3", "label": 1}] * 10_001}}, 413),
        ]
        for request, status in invalid:
            response = http.post(f"{url}/feedback", **request)
            assert response.status_code == status, (request, response.text)
        assert flush(http, url) == {"requests": 6, "feedback": 4}
        metrics = http.get(f"{url}/metrics").text
    assert metric(metrics, "retrain_endpoint_feedback_total", model=MODEL) == 4
    assert metric(metrics, "retrain_endpoint_bad_requests_total", reason="unknown_request_ids") == 1

    # A new process knows no ids in memory: they are found in the capture files.
    with running_endpoint(config) as url:
        late = http.post(f"{url}/feedback", json={"labels": [{"request_id": "fb-5", "label": 1}]})
        assert late.json() == {"accepted": 1}, late.text
        assert (
            http.post(f"{url}/feedback", json={"request_id": "nope", "label": 1}).status_code == 404
        )
    # Shutting down flushed the last label.
    table = captured(trained, FEEDBACK)
    assert table.schema.remove_metadata().equals(FEEDBACK_SCHEMA)
    labels = {r["request_id"]: r["label"] for r in table.to_pylist()}
    assert labels == {"fb-0": 1.0, "fb-1": 0.0, "fb-2": 0.0, "fb-3": 1.0, "fb-5": 1.0}


# ---- admin: weights ----------------------------------------------------------------------


def test_refused_weight_changes_leave_the_state_unchanged(
    config: EndpointConfig, http: httpx.Client
) -> None:
    cases: list[tuple[str, Any, int, str]] = [
        ("sum below 100", {"weights": {"v1": 90}, "change_id": "c"}, 422, "sum to 100"),
        ("above 100", {"weights": {"v1": 101, "v2": -1}, "change_id": "c"}, 422, "weights.v1"),
        ("negative", {"weights": {"v1": 105, "v2": -5}, "change_id": "c"}, 422, "weights.v2"),
        ("fraction", {"weights": {"v1": 50.5, "v2": 49.5}, "change_id": "c"}, 422, "integer"),
        ("string", {"weights": {"v1": "50", "v2": 50}, "change_id": "c"}, 422, "integer"),
        ("boolean", {"weights": {"v1": True, "v2": 99}, "change_id": "c"}, 422, "integer"),
        ("bad name", {"weights": {"champion": 100}, "change_id": "c"}, 422, "champion"),
        ("unknown", {"weights": {"v1": 50, "v99": 50}, "change_id": "c"}, 422, "v99"),
        ("unknown at 0", {"weights": {"v1": 100, "v42": 0}, "change_id": "c"}, 422, "v42"),
        (
            "shadow also live",
            {"weights": {"v1": 50, "v2": 50}, "shadow": "v2", "change_id": "c"},
            422,
            "cannot also take live traffic",
        ),
        ("unknown shadow", {"weights": {"v1": 100}, "shadow": "v9", "change_id": "c"}, 422, "v9"),
        ("no change id", {"weights": {"v1": 100}}, 422, "change_id"),
        ("empty change id", {"weights": {"v1": 100}, "change_id": ""}, 422, "change_id"),
        (
            "other model",
            {"weights": {"v1": 100}, "change_id": "c", "model": "other"},
            422,
            "not other",
        ),
        ("extra field", {"weights": {"v1": 100}, "change_id": "c", "x": 1}, 422, "x"),
        ("not an object", [{"v1": 100}], 400, "JSON object"),
        ("malformed", b'{"weights": {"v1": 100}', 400, "not valid JSON"),
    ]
    with running_endpoint(config) as url:
        before = http.get(f"{url}/admin/weights").json()
        persisted = config.state_file.read_bytes()
        for name, body, status, fragment in cases:
            request = {"content": body} if isinstance(body, bytes) else {"json": body}
            response = http.put(f"{url}/admin/weights", **request)
            assert response.status_code == status, (name, response.text)
            assert fragment in response.json()["error"], (name, response.json())
            assert http.get(f"{url}/admin/weights").json() == before, name
        assert config.state_file.read_bytes() == persisted
        # The model-less TrafficChange fields are accepted as they are.
        full = {"model": MODEL, "endpoint_url": url, "weights": {"v2": 100}, "change_id": "ok"}
        assert http.put(f"{url}/admin/weights", json=full).json()["generation"] == 2


def test_a_variant_that_cannot_load_is_refused_and_the_split_stays(
    trained: Trained, config: EndpointConfig, http: httpx.Client
) -> None:
    broken = register_estimator(trained.home, MODEL, FailingModel(), f"retrain-{MODEL}-unloadable")
    registry = MlflowRegistry(trained.home)
    client = MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri)
    location = client.get_model_version_download_uri(MODEL, broken.version)
    shutil.rmtree(Path(unquote(urlparse(location).path)))
    name = f"v{broken.version}"
    with running_endpoint(config) as url:
        response = put_weights(http, url, {"v1": 50, name: 50}, "with-broken")
        assert response.status_code == 500, response.text
        assert f"cannot load {MODEL} version {broken.version}" in response.json()["error"]
        state = http.get(f"{url}/admin/weights").json()
        assert (state["weights"], state["generation"]) == ({"v1": 100}, 1)
        # Not applied, so not remembered: the same change id may be retried.
        assert put_weights(http, url, {"v1": 50, "v2": 50}, "with-broken").json()["generation"] == 2


def test_changes_are_idempotent_by_change_id(config: EndpointConfig, http: httpx.Client) -> None:
    with running_endpoint(config) as url:
        first = put_weights(http, url, {"v1": 95, "v2": 5}, "rollout-m-1/stage-1").json()
        assert (first["weights"], first["generation"]) == ({"v1": 95, "v2": 5}, 2)
        again = put_weights(http, url, {"v1": 95, "v2": 5}, "rollout-m-1/stage-1")
        assert again.status_code == 200 and again.json() == first
        # Same id, other body: still the state in force, untouched.
        assert put_weights(http, url, {"v2": 100}, "rollout-m-1/stage-1").json() == first
        second = put_weights(http, url, {"v1": 75, "v2": 25}, "rollout-m-1/stage-2").json()
        assert (second["generation"], second["change_id"]) == (3, "rollout-m-1/stage-2")
        assert put_weights(http, url, {"v1": 100}, "initial").json() == second


def test_weights_and_generation_survive_a_restart(
    config: EndpointConfig, http: httpx.Client
) -> None:
    with running_endpoint(config) as url:
        put_weights(http, url, {"v1": 50, "v2": 50}, "half")
        state = put_weights(http, url, {"v2": 100}, "all-v2", shadow="v1").json()
        assert state["generation"] == 3
    with running_endpoint(config) as url:
        assert http.get(f"{url}/admin/weights").json() == state
        assert http.get(f"{url}/healthz").json()["generation"] == 3
        # Change ids applied before the restart are still recognised.
        assert put_weights(http, url, {"v1": 100}, "half").json() == state
        answer = http.post(f"{url}/invocations", json={"features": demo_features(1)[0]})
        assert answer.json()["variant"] == "v2"
        metrics = http.get(f"{url}/metrics").text
    assert metric(metrics, "retrain_endpoint_generation", model=MODEL) == 3
    assert metric(metrics, "retrain_endpoint_weight", model=MODEL, variant="v2") == 100


def test_swaps_under_concurrent_traffic_stamp_each_answer_with_its_generation(
    config: EndpointConfig, trained: Trained, http: httpx.Client
) -> None:
    splits = [{"v2": 100}, {"v1": 100}] * 4
    generations = {1: "v1"}
    responses: list[httpx.Response] = []
    with running_endpoint(config) as url:
        sender = threading.Thread(
            target=lambda: responses.extend(send_requests(url, 240, concurrency=6, seed=5))
        )
        sender.start()
        for step, weights in enumerate(splits):
            state = put_weights(http, url, weights, f"swap-{step}").json()
            generations[state["generation"]] = next(iter(weights))
        sender.join()
        assert flush(http, url)["requests"] == 240
    assert all(r.status_code == 200 for r in responses)
    for row in captured(trained, REQUESTS).select(["generation", "variant"]).to_pylist():
        assert generations[row["generation"]] == row["variant"], row


# ---- startup ---------------------------------------------------------------------------


def test_without_a_champion_predictions_wait_for_weights(
    trained: Trained, http: httpx.Client
) -> None:
    model = "endpoint-no-champion"
    spec = write_demo_dataset(
        trained.home,
        model,
        datetime.now(UTC).date(),
        days=1,
        drift_day=None,
        rows_per_day=10,
        baseline_rows=20,
        golden_rows=10,
    )
    SpecStore(trained.home).register(spec)
    with running_endpoint(EndpointConfig(home=trained.home, model=model)) as url:
        state = http.get(f"{url}/admin/weights").json()
        assert (state["weights"], state["generation"], state["variants"]) == ({}, 0, {})
        assert http.get(f"{url}/healthz").json()["deployed"] is False
        response = http.post(f"{url}/invocations", json={"features": demo_features(1)[0]})
        assert (response.status_code, response.json()) == (503, {"error": NOT_DEPLOYED})
        refused = put_weights(http, url, {"v1": 100}, "first")
        assert refused.status_code == 422 and "registry versions none" in refused.json()["error"]


def test_an_unregistered_model_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(EndpointError, match="not registered"):
        create_app(EndpointConfig(home=tmp_path, model="ghost"))
    from starters.cli.app import app

    result = CliRunner().invoke(app, ["serve", "ghost", "--home", str(tmp_path)])
    assert result.exit_code == 1
    assert "not registered" in result.output + (result.stderr or "")


def test_endpoint_port_comes_from_the_url() -> None:
    assert endpoint_port("http://127.0.0.1:8081") == 8081
    assert endpoint_port("http://localhost") == 80
    assert endpoint_port("https://models.internal/predict") == 443


# ---- admin: authentication ---------------------------------------------------------------


def test_the_admin_api_needs_the_token_and_never_echoes_it(config: EndpointConfig) -> None:
    """Without the token nobody moves live traffic (or reads the split, or flushes)."""
    change = {"weights": {"v1": 0, "v2": 100}, "change_id": "attack"}
    with running_endpoint(config) as url, httpx.Client(timeout=30) as anonymous:
        before = anonymous.get(f"{url}/admin/weights", headers=ADMIN_HEADERS).json()
        attempts = {
            "no token": anonymous.put(f"{url}/admin/weights", json=change),
            "wrong token": anonymous.put(
                f"{url}/admin/weights", json=change, headers={"Authorization": "Bearer guess"}
            ),
            "bare token": anonymous.put(
                f"{url}/admin/weights", json=change, headers={"Authorization": "guess"}
            ),
            "read": anonymous.get(f"{url}/admin/weights"),
            "flush": anonymous.post(f"{url}/admin/flush"),
        }
        for what, answer in attempts.items():
            assert answer.status_code == 401, what
            assert "guess" not in answer.text and "Bearer" in answer.headers["www-authenticate"]
        after = anonymous.get(f"{url}/admin/weights", headers=ADMIN_HEADERS).json()
    assert after == before


def test_the_admin_token_file_is_created_once_and_private(
    config: EndpointConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without RETRAIN_ENDPOINT_ADMIN_TOKEN, the first start writes a random token readable by
    its owner only; workers sharing the home read the same file."""
    monkeypatch.delenv(ADMIN_TOKEN_ENV)
    token = admin_token(config.home, MODEL, create=True)
    path = admin_token_file(config.home, MODEL)
    assert token and len(token) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert admin_token(config.home, MODEL, create=True) == token == admin_token(config.home, MODEL)
    with running_endpoint(config) as url, httpx.Client(timeout=30) as http:
        headers = {"Authorization": f"Bearer {token}"}
        assert http.get(f"{url}/admin/weights", headers=headers).status_code == 200
        assert http.get(f"{url}/admin/weights", headers=ADMIN_HEADERS).status_code == 401
        state = LocalEndpoint(config.home).read_traffic(MODEL, url)
    assert state.model == MODEL


def test_what_a_killed_endpoint_acknowledged_is_captured_once(
    trained: Trained, config: EndpointConfig, tmp_path: Path
) -> None:
    """kill -9 between answering and writing the Parquet files loses nothing answered: the
    write-ahead log is replayed by the next process, once."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [RETRAIN, "serve", MODEL, "--home", str(trained.home), "--port", str(port)]
    ids = [f"kill-{i}" for i in range(40)]

    # This checkout's code in the child, whatever the venv's editable install points at.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def start() -> subprocess.Popen[bytes]:
        log = open(tmp_path / "endpoint.log", "ab")  # noqa: SIM115 - the child's
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return process
            assert process.poll() is None, (tmp_path / "endpoint.log").read_text()[-3000:]
            time.sleep(0.2)
        raise AssertionError("the endpoint did not start")

    first = start()
    try:
        with httpx.Client(timeout=30) as http:
            send_requests(url, len(ids), request_ids=ids, client=http)
            labels = [{"request_id": i, "label": 1} for i in ids[:25]]
            assert http.post(f"{url}/feedback", json={"labels": labels}).json()["accepted"] == 25
    finally:
        first.kill()  # SIGKILL: no lifespan shutdown, no final flush
        first.wait()
    for _ in range(2):  # the second start finds nothing left to replay
        process = start()
        try:
            with httpx.Client(timeout=30, headers=ADMIN_HEADERS) as http:
                http.post(f"{url}/admin/flush").raise_for_status()
        finally:
            process.kill()
            process.wait()
    requests = captured(trained, REQUESTS).to_pylist()
    live = [row["request_id"] for row in requests if not row["shadow"]]
    assert sorted(live) == sorted(ids)
    feedback = [row["request_id"] for row in captured(trained, FEEDBACK).to_pylist()]
    assert sorted(feedback) == sorted(ids[:25])


def test_predictions_run_on_one_openmp_thread_in_the_serving_thread() -> None:
    """A one-row prediction is too little work to split across cores: the serving thread's
    model calls use one OpenMP thread, and that limit is its own (other threads keep theirs).
    In a process of its own without OMP_NUM_THREADS (the suite sets it to one for every
    thread, which would hide the serving thread's own limit)."""
    if (os.cpu_count() or 1) == 1:
        pytest.skip("one core: OpenMP runs one thread anyway, so there is nothing to limit")
    env = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    probe = subprocess.run(
        [sys.executable, "-c", f"from {__name__} import openmp_threads_when_serving as p; p()"],
        env={**env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    before, serving, after = json.loads(probe.stdout.splitlines()[-1])
    assert before and max(before) > 1
    assert serving == [1] * len(before)
    assert after == before


def openmp_threads_when_serving() -> None:
    """Prints the OpenMP thread counts of this thread, of a serving thread's prediction, and
    of this thread afterwards."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # type: ignore[import-untyped, unused-ignore]
    from threadpoolctl import threadpool_info  # type: ignore[import-untyped, unused-ignore]

    from serving.variants import Variant
    from workflows.loop.models import ModelVersion
    from workflows.spec.models import Task

    def openmp_threads() -> list[int]:
        return [int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "openmp"]

    frame = pa.table({"x": [0.0, 1.0, 2.0, 3.0] * 10}).to_pandas()
    estimator = HistGradientBoostingClassifier(max_iter=3).fit(frame, [0, 1] * 20)
    variant = Variant(
        ModelVersion(model=MODEL, version="1", source="-"), estimator, Task.CLASSIFICATION
    )
    before = openmp_threads()
    seen: list[list[int]] = []

    def serve_one() -> None:
        variant.predict(frame.head(1))
        seen.append(openmp_threads())

    thread = threading.Thread(target=serve_one)
    thread.start()
    thread.join()
    print(json.dumps([before, seen[0], openmp_threads()]))
