"""The canary's numbers for a Vertex endpoint, from Cloud Monitoring.

Vertex publishes per deployed model, on resource type `aiplatform.googleapis.com/Endpoint`
(resource labels `resource_container`, `location`, `endpoint_id`; metric label
`deployed_model_id`):

- `aiplatform.googleapis.com/prediction/online/prediction_count` (DELTA INT64): requests;
- `aiplatform.googleapis.com/prediction/online/error_count` (DELTA INT64): failed requests;
- `aiplatform.googleapis.com/prediction/online/prediction_latencies` (DELTA DISTRIBUTION, ms;
  metric label `latency_type`: we read `total`, what the caller waits for).

Labelled quality is ours, written by the feedback joiner with `publish_quality` as GAUGE points
(Cloud Monitoring refuses DELTA for user-defined metrics), each point one batch, on resource
`global` with metric labels `endpoint` (display name) and `variant`:
`custom.googleapis.com/adaptive_retraining/{labelled,correct,log_loss_sum,
log_loss_squared_sum}` and `.../prediction_bin` (metric label `bin`: `00`..`19`, the 20 equal
bins of the positive-class score on [0, 1]). A series takes at most one point per 5 s: the
joiner batches.

Each variant's window is `WindowRef.since` .. now (Cloud Monitoring has no generation; at least
one 60 s alignment period, ending now). Sums use ALIGN_SUM over one alignment period spanning
the window; p50/p99 use ALIGN_PERCENTILE_50/99 of the window's merged latency distribution.

The checks follow `activities/canary_statistics.py` where counts allow: error rate and accuracy
by the pooled two-proportion z-test; log loss by Welch's t-test from the loss sums and sums of
squares; prediction shift as the Jensen-Shannon distance (base 2) of the score histograms with
a chi-square test of homogeneity for its p-value. Latency p50/p99 are ratios without a p-value:
Cloud Monitoring keeps bucketed distributions, not per-request samples, so no rank or bootstrap
test can run (the verdict then fails on the ratio alone, with enough requests). Vertex's
metrics reach Cloud Monitoring a few minutes late: the stage's bake should outlast that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import requests
import scipy.stats  # type: ignore[import-untyped, unused-ignore]
from google.api_core import exceptions as gexc
from google.auth.transport.requests import AuthorizedSession
from google.cloud import monitoring_v3
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped, unused-ignore]
from temporalio.exceptions import ApplicationError

from activities.canary_statistics import SHIFT_BINS, greater_proportion_p
from activities.gcp.clients import GcpClients
from activities.gcp.endpoint import deployed_variants, endpoint_client, find_endpoint
from activities.gcp.errors import GCP_REQUEST_REJECTED, gcp_call
from workflows.cloud_settings import VertexSettings
from workflows.rollout_models import (
    CanaryRequest,
    CanaryStatistics,
    CheckName,
    CheckStatistic,
    VariantSummary,
    WindowRef,
)

BUILTIN = "aiplatform.googleapis.com/prediction/online"
CUSTOM = "custom.googleapis.com/adaptive_retraining"
ENDPOINT_RESOURCE = "aiplatform.googleapis.com/Endpoint"
MIN_ALIGNMENT = timedelta(seconds=60)
_Aligner = monitoring_v3.Aggregation.Aligner


@dataclass(frozen=True)
class VariantCounts:
    """One variant's window, as Cloud Monitoring sums it."""

    variant: str
    requests: int
    errors: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    labelled: int
    correct: int
    log_loss_sum: float
    log_loss_squared_sum: float
    bins: tuple[int, ...]  # SHIFT_BINS counts of the positive-class score

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def log_loss(self) -> float | None:
        return self.log_loss_sum / self.labelled if self.labelled else None

    @property
    def mean_prediction(self) -> float | None:
        total = sum(self.bins)
        if not total:
            return None
        return sum((i + 0.5) / SHIFT_BINS * n for i, n in enumerate(self.bins)) / total


def score_bin(score: float) -> str:
    return f"{min(int(score * SHIFT_BINS), SHIFT_BINS - 1):02d}"


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
    bins: dict[str, int] = {}
    for score in scores:
        bins[score_bin(score)] = bins.get(score_bin(score), 0) + 1
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
    def __init__(self, clients: GcpClients, settings: VertexSettings) -> None:
        self._clients = clients
        self._settings = settings

    @cached_property
    def _endpoints(self) -> Any:
        return endpoint_client(self._clients)

    @cached_property
    def _metrics(self) -> MetricsApi:
        return MetricsApi(self._clients)

    def analyse(self, request: CanaryRequest, heartbeat: Callable[[str], None]) -> CanaryStatistics:
        endpoint = find_endpoint(self._endpoints, self._settings)
        if endpoint is None:
            raise ApplicationError(
                f"no Vertex endpoint named {self._settings.endpoint_name!r} to analyse",
                type=GCP_REQUEST_REJECTED,
                non_retryable=True,
            )
        deployed = deployed_variants(endpoint)
        now = datetime.now(UTC)
        sides = []
        for window in (request.champion, request.challenger):
            if window.variant not in deployed:
                raise ApplicationError(
                    f"{window.variant} is not deployed on {endpoint.name}",
                    type=GCP_REQUEST_REJECTED,
                    non_retryable=True,
                )
            heartbeat(f"reading Cloud Monitoring for {window.variant}")
            endpoint_id = endpoint.name.rsplit("/", 1)[-1]
            sides.append(self.counts(endpoint_id, deployed[window.variant], window, now))
        return statistics(sides[0], sides[1], shadow=request.challenger.shadow)

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
        return VariantCounts(
            variant=window.variant,
            requests=requests,
            errors=min(requests, int(total(f"{BUILTIN}/error_count", builtin))),
            latency_p50_ms=latency(_Aligner.ALIGN_PERCENTILE_50),
            latency_p99_ms=latency(_Aligner.ALIGN_PERCENTILE_99),
            labelled=int(total(f"{CUSTOM}/labelled", ours)),
            correct=int(total(f"{CUSTOM}/correct", ours)),
            log_loss_sum=total(f"{CUSTOM}/log_loss_sum", ours),
            log_loss_squared_sum=total(f"{CUSTOM}/log_loss_squared_sum", ours),
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


# ---- the statistics, pure --------------------------------------------------------------------


def statistics(
    champ: VariantCounts, chal: VariantCounts, *, shadow: bool = False
) -> CanaryStatistics:
    return CanaryStatistics(
        champion=_summary(champ),
        challenger=_summary(chal),
        checks=[
            CheckStatistic(
                name=CheckName.SAMPLE_SIZE,
                champion=champ.requests,
                challenger=chal.requests,
                samples=min(champ.requests, chal.requests),
                detail=(
                    f"{chal.requests} requests on the challenger, {champ.requests} on the champion"
                ),
            ),
            _error_rate(champ, chal),
            _latency(CheckName.LATENCY_P50, champ.latency_p50_ms, chal.latency_p50_ms, champ, chal),
            _latency(CheckName.LATENCY_P99, champ.latency_p99_ms, chal.latency_p99_ms, champ, chal),
            _accuracy(champ, chal),
            _log_loss(champ, chal),
            _prediction_shift(champ, chal),
        ],
        shadow=shadow,
    )


def _summary(side: VariantCounts) -> VariantSummary:
    return VariantSummary(
        variant=side.variant,
        requests=side.requests,
        errors=side.errors,
        error_rate=side.error_rate,
        latency_p50_ms=side.latency_p50_ms,
        latency_p99_ms=side.latency_p99_ms,
        labelled=side.labelled,
        accuracy=side.accuracy,
        log_loss=side.log_loss,
        mean_prediction=side.mean_prediction,
    )


def _error_rate(champ: VariantCounts, chal: VariantCounts) -> CheckStatistic:
    if not (champ.requests and chal.requests):
        return CheckStatistic(name=CheckName.ERROR_RATE, detail="no requests on a variant yet")
    return CheckStatistic(
        name=CheckName.ERROR_RATE,
        champion=champ.error_rate,
        challenger=chal.error_rate,
        difference=chal.error_rate - champ.error_rate,
        p_value=greater_proportion_p(chal.errors, chal.requests, champ.errors, champ.requests),
        samples=min(champ.requests, chal.requests),
        detail=(
            f"{chal.errors} errors in {chal.requests} requests on the challenger, {champ.errors} "
            f"in {champ.requests} on the champion (Vertex error_count / prediction_count); "
            "pooled two-proportion z-test, one-sided"
        ),
    )


def _latency(
    name: CheckName,
    champion: float | None,
    challenger: float | None,
    champ: VariantCounts,
    chal: VariantCounts,
) -> CheckStatistic:
    if champion is None or challenger is None or champion <= 0:
        return CheckStatistic(name=name, detail="no latency distribution on a variant yet")
    return CheckStatistic(
        name=name,
        champion=champion,
        challenger=challenger,
        difference=challenger / champion,
        samples=min(champ.requests - champ.errors, chal.requests - chal.errors),
        detail=(
            f"{challenger:.4g} ms on the challenger, {champion:.4g} ms on the champion, from "
            "Cloud Monitoring's bucketed latency distributions: no per-request samples, so no "
            "significance test (p-value none)"
        ),
    )


def _accuracy(champ: VariantCounts, chal: VariantCounts) -> CheckStatistic:
    if champ.accuracy is None or chal.accuracy is None:
        return CheckStatistic(name=CheckName.ACCURACY, detail="no labelled answer on a variant yet")
    return CheckStatistic(
        name=CheckName.ACCURACY,
        champion=champ.accuracy,
        challenger=chal.accuracy,
        difference=champ.accuracy - chal.accuracy,
        p_value=greater_proportion_p(champ.correct, champ.labelled, chal.correct, chal.labelled),
        samples=min(champ.labelled, chal.labelled),
        detail=(
            f"{chal.correct} of {chal.labelled} labelled answers right on the challenger, "
            f"{champ.correct} of {champ.labelled} on the champion; pooled two-proportion z-test"
        ),
    )


def _spread(side: VariantCounts) -> float:
    """Sample standard deviation of the losses, from their sum and sum of squares."""
    n, total = side.labelled, side.log_loss_sum
    return math.sqrt(max(side.log_loss_squared_sum - total * total / n, 0.0) / (n - 1))


def _log_loss(champ: VariantCounts, chal: VariantCounts) -> CheckStatistic:
    if champ.log_loss is None or chal.log_loss is None:
        return CheckStatistic(name=CheckName.LOG_LOSS, detail="no labelled answer on a variant yet")
    p_value = 0.0 if chal.log_loss > champ.log_loss else 1.0
    if champ.labelled >= 2 and chal.labelled >= 2 and (_spread(champ) or _spread(chal)):
        result = scipy.stats.ttest_ind_from_stats(
            chal.log_loss,
            _spread(chal),
            chal.labelled,
            champ.log_loss,
            _spread(champ),
            champ.labelled,
            equal_var=False,
            alternative="greater",
        )
        p_value = float(result.pvalue)
    return CheckStatistic(
        name=CheckName.LOG_LOSS,
        champion=champ.log_loss,
        challenger=chal.log_loss,
        difference=chal.log_loss - champ.log_loss,
        p_value=p_value,
        samples=min(champ.labelled, chal.labelled),
        detail=(
            f"mean log loss {chal.log_loss:.4f} over {chal.labelled} labelled answers on the "
            f"challenger, {champ.log_loss:.4f} over {champ.labelled} on the champion; Welch "
            "t-test from sums, one-sided"
        ),
    )


def _prediction_shift(champ: VariantCounts, chal: VariantCounts) -> CheckStatistic:
    if not (sum(champ.bins) and sum(chal.bins)):
        return CheckStatistic(
            name=CheckName.PREDICTION_SHIFT, detail="no scored answer on a variant yet"
        )
    distance = float(jensenshannon(chal.bins, champ.bins, base=2))
    used = [(a, b) for a, b in zip(chal.bins, champ.bins, strict=True) if a or b]
    p_value = 1.0
    if len(used) >= 2:
        p_value = float(scipy.stats.chi2_contingency(list(zip(*used, strict=True))).pvalue)
    return CheckStatistic(
        name=CheckName.PREDICTION_SHIFT,
        champion=champ.mean_prediction,
        challenger=chal.mean_prediction,
        difference=distance,
        p_value=p_value,
        samples=min(sum(champ.bins), sum(chal.bins)),
        detail=(
            f"Jensen-Shannon distance {distance:.4f} (base 2) between the scores ({SHIFT_BINS} "
            f"equal bins) of {sum(chal.bins)} challenger and {sum(champ.bins)} champion "
            "answers; chi-square test of homogeneity"
        ),
    )
