"""The gateway's Prometheus metrics, in a registry of its own per app (several apps can live
in one process, as in tests)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# The names as exposed (counters gain `_total`); dashboards and the compose check use them.
GATEWAY_METRIC_NAMES: tuple[str, ...] = (
    "retrain_gateway_requests_total",
    "retrain_gateway_events_total",
    "retrain_dead_letters",
    "retrain_gateway_pending_events",
)


class Outcome:
    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    # Not delivered this time (Temporal away, or the coordinator's backlog full): retried later.
    POSTPONED = "postponed"
    DEAD_LETTERED = "dead_lettered"


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "retrain_gateway_requests",
            "Requests answered, by source and HTTP status (refused ones included).",
            ["source", "status"],
            registry=self.registry,
        )
        self._events = Counter(
            "retrain_gateway_events",
            "Events by source and outcome: accepted (stored for delivery), delivered to a "
            "coordinator, postponed (an attempt that will be retried), dead_lettered.",
            ["source", "outcome"],
            registry=self.registry,
        )
        self._dead_letters = Gauge(
            "retrain_dead_letters",
            "Entries in the gateway's dead-letter store.",
            registry=self.registry,
        )
        self._pending = Gauge(
            "retrain_gateway_pending_events",
            "Events stored and not yet delivered.",
            registry=self.registry,
        )

    def request(self, source: str, status: int) -> None:
        self._requests.labels(source, str(status)).inc()

    def events(self, source: str, outcome: str, count: int = 1) -> None:
        if count:
            self._events.labels(source, outcome).inc(count)

    def stored(self, pending: int, dead_letters: int) -> None:
        """The database's counts (read at scrape time: `retrain dlq` changes them too)."""
        self._pending.set(pending)
        self._dead_letters.set(dead_letters)

    def render(self) -> bytes:
        return generate_latest(self.registry)
