"""The canary's numbers for an Azure ML online endpoint, from Azure Monitor and the capture.

Azure ML publishes on the endpoint resource (`.../onlineEndpoints/<name>`), per minute:

- `RequestsPerMinute` (Count; dimensions `deployment`, `statusCodeClass`, ...): requests, of
  which `5xx` are the errors the error-rate check counts and `4xx` the callers' own;
- `RequestLatency_P50`, `RequestLatency_P99` (Milliseconds; dimension `deployment`): each
  minute's percentile; the window's p50 is their mean weighted by each minute's requests (a
  minute of two requests, one of them a cold start, must not weigh like a busy one), its p99
  their maximum. Azure Monitor keeps no per-request samples, so these are ratios without a
  p-value, as on the other clouds.

A shadow window (mirrored requests, which the endpoint's live metrics do not count) reads the
deployment's own metrics instead: `RequestsPerMinute` by `envoy_response_code` and its
`RequestLatency_P50` / `_P99`. Each variant's window is `WindowRef.since` (its minute) to now,
read at `PT1M` and summed.
Labelled quality and the prediction shift come from the data collector's output joined with
the ground truth (`activities/rollout/captured.py`, combined by `with_captured_quality`), as on
SageMaker and Vertex, so a stage decides with no feedback job of the user's. Azure ML's
metrics reach Azure Monitor within minutes: a stage's bake should outlast that.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.exceptions import ApplicationError

from activities.azure.clients import AzureClients
from activities.azure.endpoint import deployment_name
from activities.azure.errors import azure_call
from activities.ports import CaptureSource, MetricSource
from activities.rollout.captured import captured_comparison
from activities.rollout.counts import VariantCounts, count_statistics, with_captured_quality
from activities.rollout.statistics import SHIFT_BINS
from workflows.common.errors import ErrorType
from workflows.rollout.models import CanaryRequest, CanaryStatistics, WindowRef
from workflows.spec.azure import AzureSettings

SOURCE = MetricSource(
    store="Azure Monitor", latency="RequestLatency", requests="requests", errors="5xx"
)


def minute(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(second=0, microsecond=0)


def timespan(start: datetime, end: datetime) -> str:
    """Azure Monitor's `start/end` (ISO 8601, UTC)."""
    return f"{start.isoformat().replace('+00:00', 'Z')}/{end.isoformat().replace('+00:00', 'Z')}"


class AzureMonitorCanary:
    def __init__(
        self,
        clients: AzureClients,
        settings: AzureSettings,
        capture: CaptureSource | None = None,
        home: Path | None = None,
    ) -> None:
        self._clients = clients
        self._settings = settings
        self._capture = capture
        self._home = home

    def analyse(self, request: CanaryRequest, heartbeat: Callable[[str], None]) -> CanaryStatistics:
        deployments = self._deployments()
        now = datetime.now(UTC)
        sides = []
        for window in (request.champion, request.challenger):
            if deployment_name(window.variant) not in deployments:
                raise ApplicationError(
                    f"{window.variant} is not deployed on {self._settings.endpoint_name}",
                    type=ErrorType.AZURE_REQUEST_REJECTED,
                    non_retryable=True,
                )
            heartbeat(f"reading Azure Monitor for {window.variant}")
            sides.append(self.counts(window, now))
        counted = count_statistics(
            sides[0], sides[1], shadow=request.challenger.shadow, source=SOURCE
        )
        if self._capture is None or self._home is None:
            return counted
        captured = captured_comparison(self._capture, self._home, request, heartbeat)
        return counted if captured is None else with_captured_quality(counted, captured)

    def counts(self, window: WindowRef, now: datetime) -> VariantCounts:
        deployment = deployment_name(window.variant)
        span = timespan(minute(window.since), minute(now) + timedelta(minutes=1))
        if window.shadow:
            # Mirrored requests reach the deployment, not the endpoint's live metrics: the
            # deployment's own metrics count them (by Envoy's response code).
            resource = f"{self._clients.endpoint_id}/deployments/{deployment}"
            requests_query, dimension, latency_query = "envoy_response_code eq '*'", None, None
        else:
            resource = self._clients.endpoint_id
            requests_query = f"deployment eq '{deployment}' and statusCodeClass eq '*'"
            dimension, latency_query = "statusCodeClass", f"deployment eq '{deployment}'"
        by_class: dict[str, float] = {}
        per_minute: dict[datetime, float] = {}
        for series in self._series(resource, "RequestsPerMinute", "Total", span, requests_query):
            values = {m.name.value: m.value for m in series.metadatavalues or []}
            code = values.get(dimension or "envoy_response_code", "")
            key = code if dimension else f"{code[:1]}xx"
            for point in series.data or []:
                by_class[key] = by_class.get(key, 0.0) + (point.total or 0.0)
                if key == "2xx":
                    per_minute[point.time_stamp] = per_minute.get(point.time_stamp, 0.0) + (
                        point.total or 0.0
                    )
        weighted = [
            (p.average, per_minute.get(p.time_stamp, 0.0))
            for s in self._series(resource, "RequestLatency_P50", "Average", span, latency_query)
            for p in s.data or []
            if p.average is not None
        ]
        weight = sum(w for _, w in weighted)
        p99 = [
            p.maximum
            for s in self._series(resource, "RequestLatency_P99", "Maximum", span, latency_query)
            for p in s.data or []
            if p.maximum is not None
        ]
        return VariantCounts(
            variant=window.variant,
            requests=int(sum(by_class.values())),
            errors=int(by_class.get("5xx", 0.0)),
            client_errors=int(by_class.get("4xx", 0.0)),
            latency_p50_ms=(
                sum(v * w for v, w in weighted) / weight
                if weight
                else (sum(v for v, _ in weighted) / len(weighted) if weighted else None)
            ),
            latency_p99_ms=max(p99) if p99 else None,
            # Labelled quality comes from the capture (`with_captured_quality`).
            labelled=0,
            correct=0,
            losses=0,
            loss_sum=0.0,
            loss_squared_sum=0.0,
            bins=(0,) * SHIFT_BINS,
        )

    def _deployments(self) -> set[str]:
        name = self._settings.endpoint_name
        with azure_call(f"listing the deployments of {name}"):
            return {d.name for d in self._clients.ml.online_deployments.list(name)}

    def _series(
        self, resource: str, metric: str, aggregation: str, span: str, query: str | None
    ) -> list[Any]:
        with azure_call(f"reading {metric} from Azure Monitor"):
            found = self._clients.monitor.metrics.list(
                resource,
                timespan=span,
                # An ISO 8601 duration: azure-mgmt-monitor sends a timedelta as "0:01:00",
                # which Azure Monitor refuses.
                interval="PT1M",
                metricnames=metric,
                aggregation=aggregation,
                filter=query,
            )
        return [series for value in found.value or [] for series in value.timeseries or []]
