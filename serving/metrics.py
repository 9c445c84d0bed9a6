"""The endpoint's Prometheus metrics, in a registry of its own per app (several apps can live
in one process, as in tests)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Local models answer in well under a millisecond to a few hundred.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class EndpointMetrics:
    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        answer = ["model", "variant", "shadow"]
        self._requests = Counter(
            "retrain_endpoint_requests",
            "Answers given, live and mirrored (shadow), errors included.",
            answer,
            registry=self.registry,
        )
        self._errors = Counter(
            "retrain_endpoint_errors",
            "Answers that failed inside the model.",
            answer,
            registry=self.registry,
        )
        self._latency = Histogram(
            "retrain_endpoint_latency_seconds",
            "Time spent in the model call.",
            answer,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._bad_requests = Counter(
            "retrain_endpoint_bad_requests",
            "Requests refused before reaching a model.",
            ["model", "reason"],
            registry=self.registry,
        )
        self._weight = Gauge(
            "retrain_endpoint_weight",
            "Live traffic share of each variant, in percent.",
            ["model", "variant"],
            registry=self.registry,
        )
        self._generation = Gauge(
            "retrain_endpoint_generation",
            "Generation of the traffic split in force.",
            ["model"],
            registry=self.registry,
        )
        self._feedback = Counter(
            "retrain_endpoint_feedback",
            "Ground-truth labels accepted.",
            ["model"],
            registry=self.registry,
        )
        self._capture_errors = Counter(
            "retrain_endpoint_capture_errors",
            "Capture flushes that failed (their rows stay buffered).",
            ["model", "kind"],
            registry=self.registry,
        )
        self._shadow_skipped = Counter(
            "retrain_endpoint_shadow_skipped",
            "Mirrored calls skipped because too many were already waiting.",
            ["model"],
            registry=self.registry,
        )
        self._weighted: set[str] = set()

    def answer(self, variant: str, shadow: bool, seconds: float, error: bool) -> None:
        labels = (self.model, variant, "true" if shadow else "false")
        self._requests.labels(*labels).inc()
        self._latency.labels(*labels).observe(seconds)
        if error:
            self._errors.labels(*labels).inc()

    def bad_request(self, reason: str) -> None:
        self._bad_requests.labels(self.model, reason).inc()

    def routing(self, weights: Mapping[str, int], generation: int) -> None:
        # A variant that left the split reads 0 rather than keeping its last share.
        for variant in self._weighted - set(weights):
            self._weight.labels(self.model, variant).set(0)
        for variant, weight in weights.items():
            self._weight.labels(self.model, variant).set(weight)
        self._weighted |= set(weights)
        self._generation.labels(self.model).set(generation)

    def feedback(self, labels: int) -> None:
        self._feedback.labels(self.model).inc(labels)

    def capture_error(self, kind: str) -> None:
        self._capture_errors.labels(self.model, kind).inc()

    def shadow_skipped(self) -> None:
        self._shadow_skipped.labels(self.model).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
