"""The canary's numbers for a Vertex endpoint, from Cloud Monitoring.

Vertex publishes per deployed model, on resource type `aiplatform.googleapis.com/Endpoint`
(resource labels `resource_container`, `location`, `endpoint_id`; metric label
`deployed_model_id`):

- `aiplatform.googleapis.com/prediction/online/prediction_count` (DELTA INT64): requests;
- `aiplatform.googleapis.com/prediction/online/error_count` (DELTA INT64): failed requests;
- `aiplatform.googleapis.com/prediction/online/prediction_latencies` (DELTA DISTRIBUTION, ms;
  metric label `latency_type`: we read `total`, what the caller waits for).

Labelled quality and the prediction shift come from the endpoint's request-response logging
joined with the ground truth (`activities.rollout.captured`, combined by
`counts.with_captured_quality`), so a stage decides with no feedback job of the user's.

Optionally, quality published by a feedback job with `publish_quality` is read as GAUGE points
(Cloud Monitoring refuses DELTA for user-defined metrics), each point one batch, on resource
`global` with metric labels `endpoint` (display name) and `variant`:
`custom.googleapis.com/adaptive_retraining/{labelled,correct,log_loss_sum,
log_loss_squared_sum}` and `.../prediction_bin` (metric label `bin`: `00`..`19`, the 20 equal
bins of the positive-class score on [0, 1]). A series takes at most one point per 5 s: the
joiner batches.

Each variant's window is `WindowRef.since` .. now (Cloud Monitoring has no generation; at least
one 60 s alignment period, ending now). Sums use ALIGN_SUM over one alignment period spanning
the window; p50/p99 use ALIGN_PERCENTILE_50/99 of the window's merged latency distribution.

The checks on these counts are `activities.rollout.counts.count_statistics` (latency p50/p99 as
ratios without a p-value: Cloud Monitoring keeps bucketed distributions, not per-request
samples). Vertex's metrics reach Cloud Monitoring a few minutes late: the stage's bake should
outlast that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import google.cloud.monitoring_v3 as monitoring_v3
import requests
from google.api_core import exceptions as gexc
from google.auth.transport.requests import AuthorizedSession
from temporalio.exceptions import ApplicationError

from activities.gcp.clients import GcpClients
from activities.gcp.endpoint import deployed_variants, find_endpoint
from activities.gcp.errors import gcp_call
from activities.ports import CaptureSource, MetricSource
from activities.rollout.captured import captured_comparison
from activities.rollout.counts import (
    VariantCounts,
    count_statistics,
    score_histogram,
    with_captured_quality,
)
from activities.rollout.statistics import SHIFT_BINS
from workflows.common.errors import ErrorType
from workflows.rollout.models import CanaryRequest, CanaryStatistics, WindowRef
from workflows.spec.vertex import VertexSettings

BUILTIN = "aiplatform.googleapis.com/prediction/online"
CUSTOM = "custom.googleapis.com/adaptive_retraining"
ENDPOINT_RESOURCE = "aiplatform.googleapis.com/Endpoint"
MIN_ALIGNMENT = timedelta(seconds=60)
_Aligner = monitoring_v3.Aggregation.Aligner
SOURCE = MetricSource(store="Cloud Monitoring", latency="prediction_latencies")


def publish_quality(
    clients: GcpClients,
    settings: VertexSettings,
    endpoint: str,
    variant: str,
    labelled: int,
    correct: int,
    log_losses: Sequence[float],
    scores: Sequence[float],
    when: datetime,
) -> None:
    """Write one batch of labelled feedback for `variant` (one point per series)."""
    bins = {f"{index:02d}": n for index, n in enumerate(score_histogram(scores)) if n}
    values: list[tuple[str, dict[str, str], dict[str, Any]]] = [
        ("labelled", {}, {"int64_value": labelled}),
        ("correct", {}, {"int64_value": correct}),
        ("log_loss_sum", {}, {"double_value": math.fsum(log_losses)}),
        ("log_loss_squared_sum", {}, {"double_value": math.fsum(x * x for x in log_losses)}),
        *(("prediction_bin", {"bin": b}, {"int64_value": n}) for b, n in sorted(bins.items())),
    ]
    series = [
        monitoring_v3.TimeSeries(
            metric={
                "type": f"{CUSTOM}/{name}",
                "labels": {"endpoint": endpoint, "variant": variant, **extra},
            },
            resource={"type": "global", "labels": {"project_id": settings.project}},
            metric_kind="GAUGE",
            value_type="INT64" if "int64_value" in value else "DOUBLE",
            points=[{"interval": {"end_time": when}, "value": value}],
        )
        for name, extra, value in values
    ]
    body = {
        "timeSeries": [
            json.loads(monitoring_v3.TimeSeries.to_json(one, use_integers_for_enums=False))
            for one in series
        ]
    }
    with gcp_call(f"publishing quality metrics of {variant} on {endpoint}"):
        MetricsApi(clients).call("POST", f"projects/{settings.project}/timeSeries", json=body)


class CloudMonitoringCanary:
    def __init__(
        self,
        clients: GcpClients,
        settings: VertexSettings,
        capture: CaptureSource | None = None,
        home: Path | None = None,
    ) -> None:
        self._clients = clients
        self._settings = settings
        self._capture = capture
        self._home = home

    @cached_property
    def _endpoints(self) -> Any:
        return self._clients.endpoints

    @cached_property
    def _metrics(self) -> MetricsApi:
        return MetricsApi(self._clients)

    def analyse(self, request: CanaryRequest, heartbeat: Callable[[str], None]) -> CanaryStatistics:
        endpoint = find_endpoint(self._endpoints, self._settings)
        if endpoint is None:
            raise ApplicationError(
                f"no Vertex endpoint named {self._settings.endpoint_name!r} to analyse",
                type=ErrorType.GCP_REQUEST_REJECTED,
                non_retryable=True,
            )
        deployed = deployed_variants(endpoint)
        now = datetime.now(UTC)
        sides = []
        for window in (request.champion, request.challenger):
            if window.variant not in deployed:
                raise ApplicationError(
                    f"{window.variant} is not deployed on {endpoint.name}",
                    type=ErrorType.GCP_REQUEST_REJECTED,
                    non_retryable=True,
                )
            heartbeat(f"reading Cloud Monitoring for {window.variant}")
            endpoint_id = endpoint.name.rsplit("/", 1)[-1]
            sides.append(self.counts(endpoint_id, deployed[window.variant], window, now))
        counted = count_statistics(
            sides[0], sides[1], shadow=request.challenger.shadow, source=SOURCE
        )
        if self._capture is None or self._home is None:
            return counted
        captured = captured_comparison(self._capture, self._home, request, heartbeat)
        return counted if captured is None else with_captured_quality(counted, captured)

    def counts(
        self, endpoint_id: str, deployed_model_id: str, window: WindowRef, now: datetime
    ) -> VariantCounts:
        period = max(now - window.since, MIN_ALIGNMENT)
        builtin = (
            f'resource.type="{ENDPOINT_RESOURCE}" AND resource.labels.endpoint_id="{endpoint_id}"'
            f' AND metric.labels.deployed_model_id="{deployed_model_id}"'
        )
        ours = (
            f'resource.type="global" AND metric.labels.endpoint="{self._settings.endpoint_name}"'
            f' AND metric.labels.variant="{window.variant}"'
        )

        def total(metric: str, labels: str) -> float:
            return sum(
                _value(p)
                for s in self._series(metric, labels, _Aligner.ALIGN_SUM, now, period)
                for p in s.points
            )

        def latency(aligner: Any) -> float | None:
            metric = f"{BUILTIN}/prediction_latencies"
            found = [
                _value(p)
                for s in self._series(
                    metric,
                    builtin + ' AND metric.labels.latency_type="total"',
                    aligner,
                    now,
                    period,
                )
                for p in s.points
            ]
            # One series per variant is expected; several (replicas) are read at their worst.
            return max(found) if found else None

        bins = [0] * SHIFT_BINS
        for series in self._series(
            f"{CUSTOM}/prediction_bin", ours, _Aligner.ALIGN_SUM, now, period
        ):
            bins[int(series.metric.labels["bin"])] += int(sum(_value(p) for p in series.points))
        requests = int(total(f"{BUILTIN}/prediction_count", builtin))
        labelled = int(total(f"{CUSTOM}/labelled", ours))
        return VariantCounts(
            variant=window.variant,
            requests=requests,
            errors=min(requests, int(total(f"{BUILTIN}/error_count", builtin))),
            latency_p50_ms=latency(_Aligner.ALIGN_PERCENTILE_50),
            latency_p99_ms=latency(_Aligner.ALIGN_PERCENTILE_99),
            labelled=labelled,
            correct=int(total(f"{CUSTOM}/correct", ours)),
            # publish_quality writes one loss per labelled answer: no count of its own.
            losses=labelled,
            loss_sum=total(f"{CUSTOM}/log_loss_sum", ours),
            loss_squared_sum=total(f"{CUSTOM}/log_loss_squared_sum", ours),
            bins=tuple(bins),
        )

    def _series(
        self, metric: str, labels: str, aligner: Any, end: datetime, period: timedelta
    ) -> list[Any]:
        seconds = math.ceil(period.total_seconds())
        params = {
            "filter": f'metric.type="{metric}" AND {labels}',
            "interval.startTime": _rfc3339(end - timedelta(seconds=seconds)),
            "interval.endTime": _rfc3339(end),
            "aggregation.alignmentPeriod": f"{seconds}s",
            "aggregation.perSeriesAligner": aligner.name,
            "view": "FULL",
        }
        found: list[Any] = []
        with gcp_call(f"reading {metric} from Cloud Monitoring"):
            while True:
                response = self._metrics.call(
                    "GET", f"projects/{self._settings.project}/timeSeries", params=params
                )
                page = monitoring_v3.ListTimeSeriesResponse.from_json(
                    response.text, ignore_unknown_fields=True
                )
                found.extend(page.time_series)
                if not page.next_page_token:
                    return found
                params["pageToken"] = page.next_page_token


class MetricsApi:
    """Cloud Monitoring's REST API (v3), called directly: google-cloud-monitoring ships no REST
    transport (gRPC only), and the worker speaks REST to Google everywhere (tests: the fake)."""

    def __init__(self, clients: GcpClients) -> None:
        base = clients.monitoring_endpoint or "https://monitoring.googleapis.com"
        self._base = base.rstrip("/")
        self._session: Any = AuthorizedSession(clients.credentials)  # type: ignore[no-untyped-call]

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The response, or the `google.api_core` exception its error status maps to."""
        url = f"{self._base}/v3/{path}"
        response: requests.Response = self._session.request(method, url, timeout=30, **kwargs)
        if response.status_code >= 400:
            raise gexc.from_http_response(response)  # type: ignore[no-untyped-call]
        return response


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _value(point: Any) -> float:
    kind = monitoring_v3.TypedValue.pb(point.value).WhichOneof("value")
    return float(getattr(point.value, kind)) if kind in ("int64_value", "double_value") else 0.0
