"""Callers of a model's endpoint and the source of its ground truth, on every backend.

`EndpointTraffic.send` makes calls the way the endpoint would receive them and leaves behind
what the platform itself records; `label` delivers ground truth the way a user's labelling
process does on that platform. Nothing here joins predictions with labels or publishes quality:
that is the system's own job.

- `LocalTraffic`: the real local endpoint over HTTP (`/invocations`, `/feedback`).
- `SageMakerTraffic`: plays the SageMaker endpoint on moto: routes each call by the live
  variant weights, answers it with the variant's registered model (one row at a time, as an
  endpoint does), writes the Data Capture file SageMaker would (tests/support/capture_formats.py)
  and publishes what SageMaker publishes to CloudWatch (Invocations, Invocation5XXErrors,
  ModelLatency in microseconds); labels are Model Monitor ground-truth files in S3.
- `VertexTraffic`: the same on the Vertex fake: a request-response logging row per answered
  request (inserted through the real BigQuery SDK), Vertex's prediction metrics in the fake's
  Cloud Monitoring, ground truth as Model Monitor-format files under the settings' GCS prefix.
- `AzureTraffic`: the same on the Azure fake: routes by the endpoint's live traffic (and mirrors
  to its mirror_traffic deployment), writes the data collector's model_inputs/model_outputs
  blobs (a failed call's inputs are collected, its outputs are not), seeds Azure ML's
  RequestsPerMinute and RequestLatency_P50/P99 in the fake's Azure Monitor; ground truth as
  Model Monitor-format blobs under the settings' ground-truth prefix.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from activities.aws.clients import AwsClients
from activities.gcp.clients import GcpClients
from activities.gcp.endpoint import deployed_variants, find_endpoint
from activities.gcp.gcs_store import GcsStore
from activities.ports import ModelRegistry
from tests.support.capture_formats import (
    csv_line,
    ground_truth_record,
    hour_key,
    jsonl,
    put_sagemaker_capture,
    sagemaker_record,
)
from tests.support.vertex_fake import monitoring as vertex_monitoring
from tests.support.vertex_fake.server import FakeState
from workflows.spec.models import ModelSpec
from workflows.spec.sagemaker import SageMakerSettings
from workflows.spec.vertex import VertexSettings


@dataclass(frozen=True)
class Call:
    request_id: str
    features: dict[str, Any]


class EndpointTraffic(Protocol):
    def send(self, calls: list[Call]) -> dict[str, str]:
        """Make the calls; the variant that answered each (failed calls included)."""
        ...

    def label(self, labels: dict[str, float]) -> None:
        """Deliver ground truth by request id."""
        ...


@dataclass(frozen=True)
class _Answer:
    call: Call
    variant: str
    score: float | None  # None: the call failed
    latency_ms: float


class _Models:
    """Each variant's registered estimator, loaded once."""

    def __init__(self, registry: ModelRegistry, model: str) -> None:
        self.registry = registry
        self.model = model
        self._loaded: dict[str, Any] = {}

    def score(self, variant: str, features: dict[str, Any]) -> float:
        if variant not in self._loaded:
            versions = {v.version: v for v in self.registry.versions(self.model)}
            self._loaded[variant] = self.registry.load(versions[variant.removeprefix("v")])
        estimator = self._loaded[variant]
        # One row per call, as an endpoint answers a request.
        return float(estimator.predict_proba(pd.DataFrame([features]))[0, 1])


def _answer(
    models: _Models, calls: list[Call], weights: dict[str, float], rng: np.random.Generator
) -> list[_Answer]:
    live = sorted(v for v, weight in weights.items() if weight > 0)
    shares = np.array([weights[v] for v in live], dtype=float)
    answers = []
    for call, index in zip(
        calls, rng.choice(len(live), size=len(calls), p=shares / shares.sum()), strict=True
    ):
        variant = live[int(index)]
        started = time.perf_counter()
        try:
            score: float | None = models.score(variant, call.features)
        except Exception:  # the model's own failure: the endpoint answers 500
            score = None
        answers.append(_Answer(call, variant, score, (time.perf_counter() - started) * 1000))
    return answers


class LocalTraffic:
    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, calls: list[Call]) -> dict[str, str]:
        answered = {}
        with httpx.Client(base_url=self.url, timeout=30) as client:
            for call in calls:
                response = client.post(
                    "/invocations", json={"features": call.features, "request_id": call.request_id}
                )
                answered[call.request_id] = response.headers.get("X-Variant", "")
        return answered

    def label(self, labels: dict[str, float]) -> None:
        body = {"labels": [{"request_id": rid, "label": float(y)} for rid, y in labels.items()]}
        httpx.post(f"{self.url}/feedback", json=body, timeout=30).raise_for_status()


class SageMakerTraffic:
    def __init__(
        self,
        clients: AwsClients,
        settings: SageMakerSettings,
        spec: ModelSpec,
        registry: ModelRegistry,
        seed: int = 0,
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.spec = spec
        self.models = _Models(registry, spec.name)
        self.rng = np.random.default_rng(seed)

    def send(self, calls: list[Call]) -> dict[str, str]:
        endpoint = self.settings.endpoint_name
        described = self.clients.sagemaker.describe_endpoint(EndpointName=endpoint)
        weights = {
            v["VariantName"]: float(v.get("CurrentWeight", 0))
            for v in described["ProductionVariants"]
        }
        answers = _answer(self.models, calls, weights, self.rng)
        # A shadow variant gets a copy of its sampling share of the live requests (the share
        # is its weight, as the endpoint sets it); its answers are captured, never returned.
        shadows = {
            v["VariantName"]: min(1.0, float(v.get("CurrentWeight", 0)))
            for v in described.get("ShadowProductionVariants") or []
        }
        mirrored = [
            answer
            for variant, share in sorted(shadows.items())
            if share > 0
            for answer in _answer(
                self.models,
                [c for c in calls if self.rng.random() < share],
                {variant: 100.0},
                self.rng,
            )
        ]
        now = datetime.now(UTC)
        bucket, _, destination = (
            self.settings.capture_destination().removeprefix("s3://").partition("/")
        )
        by_variant: dict[str, list[_Answer]] = defaultdict(list)
        for answer in [*answers, *mirrored]:
            by_variant[answer.variant].append(answer)
        names = self.spec.feature_names
        for variant, group in sorted(by_variant.items()):
            records = [
                sagemaker_record(
                    now,
                    csv_line(a.call.features[name] for name in names),
                    f"{a.score:.6f}",
                    inference_id=a.call.request_id,
                )
                for a in group
                if a.score is not None
            ]
            if records:  # a failed invocation is not captured
                put_sagemaker_capture(
                    self.clients.s3, bucket, destination, endpoint, variant, now, records
                )
            self._metrics(variant, group, now)
        return {a.call.request_id: a.variant for a in answers}

    def _metrics(self, variant: str, group: list[_Answer], now: datetime) -> None:
        dimensions = [
            {"Name": "EndpointName", "Value": self.settings.endpoint_name},
            {"Name": "VariantName", "Value": variant},
        ]
        failed = sum(1 for a in group if a.score is None)
        data: list[dict[str, Any]] = [
            {"MetricName": "Invocations", "Value": float(len(group))},
            {"MetricName": "Invocation5XXErrors", "Value": float(failed)},
            {"MetricName": "Invocation4XXErrors", "Value": 0.0},
            *(
                {"MetricName": "ModelLatency", "Value": a.latency_ms * 1000.0}
                for a in group
                if a.score is not None
            ),
        ]
        for start in range(0, len(data), 500):
            self.clients.cloudwatch.put_metric_data(
                Namespace="AWS/SageMaker",
                MetricData=[
                    {**d, "Dimensions": dimensions, "Timestamp": now}
                    for d in data[start : start + 500]
                ],
            )

    def label(self, labels: dict[str, float]) -> None:
        bucket, _, prefix = self.settings.ground_truth_prefix().removeprefix("s3://").partition("/")
        key = hour_key(prefix, datetime.now(UTC), f"labels-{time.time_ns()}.jsonl")
        body = jsonl(ground_truth_record(rid, _label_text(y)) for rid, y in labels.items())
        self.clients.s3.put_object(Bucket=bucket, Key=key, Body=body.encode())


def _label_text(label: float) -> str:
    return str(int(label)) if float(label).is_integer() else str(label)


class VertexTraffic:
    def __init__(
        self,
        state: FakeState,
        clients: GcpClients,
        settings: VertexSettings,
        spec: ModelSpec,
        registry: ModelRegistry,
        seed: int = 0,
    ) -> None:
        self.state = state
        self.clients = clients
        self.settings = settings
        self.spec = spec
        self.models = _Models(registry, spec.name)
        self.rng = np.random.default_rng(seed)
        self._request_ids = iter(range(1_000_000_000, 9_999_999_999))

    def send(self, calls: list[Call]) -> dict[str, str]:
        endpoint = find_endpoint(self.clients.endpoints, self.settings)
        assert endpoint is not None, "no endpoint to call yet"
        variants = deployed_variants(endpoint)
        split = dict(endpoint.traffic_split)
        weights = {v: float(split.get(ids, 0)) for v, ids in variants.items()}
        answers = _answer(self.models, calls, weights, self.rng)
        now = datetime.now(UTC)
        endpoint_id = endpoint.name.rsplit("/", 1)[-1]
        capture = self.settings.capture
        id_field = capture.id_field if capture is not None else "request_id"
        rows = [
            {
                "endpoint": endpoint.name,
                "deployed_model_id": variants[a.variant],
                "logging_time": now.isoformat(),
                "request_id": str(next(self._request_ids)),
                "request_payload": [json.dumps({id_field: a.call.request_id, **a.call.features})],
                "response_payload": [
                    json.dumps({"prediction": int(a.score >= 0.5), "score": a.score})
                ],
            }
            for a in answers
            if a.score is not None
        ]
        if rows:
            errors = self.clients.bigquery.insert_rows_json(self.settings.logging_table(), rows)
            assert not errors, errors
        by_variant: dict[str, list[_Answer]] = defaultdict(list)
        for answer in answers:
            by_variant[answer.variant].append(answer)
        for variant, group in by_variant.items():
            vertex_monitoring.seed_prediction_metrics(
                self.state,
                endpoint_id,
                variants[variant],
                now,
                requests=len(group),
                errors=sum(1 for a in group if a.score is None),
                latencies_ms=[a.latency_ms for a in group if a.score is not None],
            )
        return {a.call.request_id: a.variant for a in answers}

    def label(self, labels: dict[str, float]) -> None:
        source = self.settings.ground_truth_source()
        body = jsonl(ground_truth_record(rid, _label_text(y)) for rid, y in labels.items())
        if source.startswith("bq://"):
            rows = [
                {"request_id": rid, "label": y, "received_at": datetime.now(UTC).isoformat()}
                for rid, y in labels.items()
            ]
            assert not self.clients.bigquery.insert_rows_json(source.removeprefix("bq://"), rows)
            return
        uri = hour_key(source, datetime.now(UTC), f"labels-{time.time_ns()}.jsonl")
        GcsStore(self.clients).put_text(uri, body, content_type="application/jsonl")


class AzureTraffic:
    def __init__(
        self,
        state: Any,
        clients: Any,
        settings: Any,
        spec: ModelSpec,
        registry: ModelRegistry,
        seed: int = 0,
    ) -> None:
        self.state = state
        self.clients = clients
        self.settings = settings
        self.spec = spec
        self.models = _Models(registry, spec.name)
        self.rng = np.random.default_rng(seed)
        # Each (deployment, minute)'s latencies: Azure's percentiles are over the whole minute.
        self._latencies: dict[tuple[str, datetime], list[float]] = defaultdict(list)

    def send(self, calls: list[Call]) -> dict[str, str]:
        import uuid

        from activities.azure.endpoint import deployment_name, our_variants
        from tests.support.azure_fake.blob import put_blob
        from tests.support.capture_formats import azure_collector_record

        endpoint = self.clients.ml.online_endpoints.get(self.settings.endpoint_name)
        weights = {v: float(w) for v, w in our_variants(endpoint.traffic or {}).items()}
        answers = _answer(self.models, calls, weights, self.rng)
        shares = {v: p for v, p in our_variants(endpoint.mirror_traffic or {}).items() if p}
        mirrored = list(shares)
        # The endpoint copies its mirror percentage of live requests to the shadow.
        copied = [c for c in calls if mirrored and self.rng.random() * 100 < shares[mirrored[0]]]
        shadow = _answer(self.models, copied, {mirrored[0]: 100.0}, self.rng) if copied else []
        now = datetime.now(UTC)
        capture = self.settings.capture
        by_variant: dict[str, list[_Answer]] = defaultdict(list)
        for answer in [*answers, *shadow]:
            by_variant[answer.variant].append(answer)
        for variant, group in sorted(by_variant.items()):
            deployment = deployment_name(variant)
            source = f"{self.clients.endpoint_id}/deployments/{deployment}"
            records: dict[str, list[dict[str, Any]]] = {"model_inputs": [], "model_outputs": []}
            for a in group:
                correlation = str(uuid.uuid4())
                row = {capture.id_field: a.call.request_id, **a.call.features}
                records["model_inputs"].append(
                    azure_collector_record(now, correlation, "model_inputs", [row], source)
                )
                if a.score is not None:
                    output = {"prediction": int(a.score >= 0.5), "score": a.score}
                    records["model_outputs"].append(
                        azure_collector_record(now, correlation, "model_outputs", [output], source)
                    )
            for collection, lines in records.items():
                name = hour_key(
                    f"{capture.prefix}/{self.settings.endpoint_name}/{deployment}/{collection}",
                    now,
                    f"{uuid.uuid4()}.jsonl",
                )
                put_blob(
                    self.state,
                    self.settings.storage_account,
                    self.settings.container,
                    name,
                    jsonl(lines).encode(),
                )
            self._metrics(deployment, group, now, live=variant not in mirrored)
        return {a.call.request_id: a.variant for a in answers}

    def _metrics(self, deployment: str, group: list[_Answer], now: datetime, live: bool) -> None:
        """What Azure ML publishes: every request reaching a deployment on the deployment
        (by Envoy's response code), live ones also on the endpoint (by deployment)."""
        from tests.support.azure_fake.monitor import seed_metric, set_metric

        endpoint = self.clients.endpoint_id
        resource = f"{endpoint}/deployments/{deployment}"
        failed = sum(1 for a in group if a.score is None)
        for status, count in (("200", len(group) - failed), ("500", failed)):
            if not count:
                continue
            dims = {"envoy_response_code": status}
            seed_metric(self.state, resource, "RequestsPerMinute", now, count, dims)
            if live:
                dims = {
                    "deployment": deployment,
                    "statusCode": status,
                    "statusCodeClass": f"{status[0]}xx",
                    "modelStatusCode": status,
                }
                seed_metric(self.state, endpoint, "RequestsPerMinute", now, count, dims)
        latencies = self._latencies[deployment, now.replace(second=0, microsecond=0)]
        latencies += [a.latency_ms for a in group if a.score is not None]
        if latencies:
            for metric, q in (("RequestLatency_P50", 50), ("RequestLatency_P99", 99)):
                value = float(np.percentile(latencies, q))
                set_metric(self.state, resource, metric, now, value)
                if live:
                    dims = {"deployment": deployment}
                    set_metric(self.state, endpoint, metric, now, value, dims)

    def label(self, labels: dict[str, float]) -> None:
        from tests.support.azure_fake.blob import put_blob

        name = hour_key(
            self.settings.ground_truth_prefix(), datetime.now(UTC), f"labels-{time.time_ns()}.jsonl"
        )
        body = jsonl(ground_truth_record(rid, _label_text(y)) for rid, y in labels.items())
        put_blob(
            self.state, self.settings.storage_account, self.settings.container, name, body.encode()
        )


def calls_from(rows: Callable[[], Any], count: int) -> tuple[list[Call], dict[str, float]]:
    """`count` calls from a row source (`starters.demo.traffic.RowSource`) and their labels."""
    calls, labels = [], {}
    for _ in range(count):
        row = rows()
        calls.append(Call(row.request_id, dict(row.features)))
        labels[row.request_id] = float(row.label)
    assert all(math.isfinite(y) for y in labels.values())
    return calls, labels
