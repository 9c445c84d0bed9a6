"""The canary analysis of a SageMaker endpoint, from CloudWatch metrics.

`CloudWatchCanary.analyse` reads each variant's window (since its `WindowRef.since`, until now)
and builds the same `CanaryStatistics` as `activities.canary_statistics.compare`, from counts
and sums instead of per-request rows:

- AWS/SageMaker (dimensions EndpointName, VariantName): Invocations, Invocation4XXErrors,
  Invocation5XXErrors (Sum) and ModelLatency (microseconds; Sum and SampleCount for the mean),
  in one GetMetricData call per variant with a single period covering the window. Errors are
  the 5XX answers of the model, as the local backend counts them (4XX are the callers' fault;
  InvocationModelErrors would count client errors too).
- Latency p50 / p99 from GetMetricStatistics ExtendedStatistics over the same single period.
  CloudWatch keeps no per-request samples, so these checks carry a ratio without a p-value;
  where percentiles are absent (moto has none) the mean latency stands in, and the detail says so.
- Our quality metrics in `settings.metrics_namespace`, same dimensions, written by
  `publish_quality` (what a feedback joiner calls): LabelledPredictions, CorrectPredictions,
  LogLossCount, LogLossSum, LogLossSquaredSum and PredictionBin00..PredictionBin19, a
  histogram of the positive-class score in 20 equal bins on [0, 1].

Tests: accuracy and error rate use the pooled two-proportion z-test of canary_statistics; log
loss Welch's t-test from the sums; prediction shift the Jensen-Shannon distance of the
histograms with a chi-square test of the 2 x 20 table (the local backend's permutation test
needs the rows). CloudWatch rounds a start time down to the minute, so a window may take in
up to a minute of the previous stage's traffic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import scipy.stats  # type: ignore[import-untyped, unused-ignore]
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped, unused-ignore]

from activities.aws.clients import AwsClients
from activities.aws.errors import aws_call, call
from activities.canary_statistics import SHIFT_BINS, greater_proportion_p
from workflows.cloud_settings import SageMakerSettings
from workflows.rollout_models import (
    CanaryRequest,
    CanaryStatistics,
    CheckName,
    CheckStatistic,
    VariantSummary,
    WindowRef,
)

SAGEMAKER_NAMESPACE = "AWS/SageMaker"
SAGEMAKER_METRICS = ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors")
QUALITY_METRICS = (
    "LabelledPredictions",
    "CorrectPredictions",
    "LogLossCount",
    "LogLossSum",
    "LogLossSquaredSum",
)
BIN_METRICS = tuple(f"PredictionBin{index:02d}" for index in range(SHIFT_BINS))
MICROSECONDS_PER_MS = 1000.0


def _dimensions(endpoint: str, variant: str) -> list[dict[str, str]]:
    return [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]


def score_bin(score: float) -> int:
    """The histogram bin of a score in [0, 1] (out-of-range scores go to the end bins)."""
    return min(SHIFT_BINS - 1, max(0, int(score * SHIFT_BINS)))


def publish_quality(
    clients: AwsClients,
    settings: SageMakerSettings,
    endpoint: str,
    variant: str,
    labelled: int,
    correct: int,
    log_losses: Sequence[float],
    scores: Sequence[float],
    timestamp: datetime,
) -> None:
    """Publish one batch of a variant's labelled feedback and predicted scores."""
    bins = [0] * SHIFT_BINS
    for score in scores:
        bins[score_bin(score)] += 1
    values: dict[str, float] = {
        "LabelledPredictions": labelled,
        "CorrectPredictions": correct,
        "LogLossCount": len(log_losses),
        "LogLossSum": math.fsum(log_losses),
        "LogLossSquaredSum": math.fsum(loss * loss for loss in log_losses),
        **{name: count for name, count in zip(BIN_METRICS, bins, strict=True)},
    }
    dimensions = _dimensions(endpoint, variant)
    call(
        "PutMetricData",
        clients.cloudwatch.put_metric_data,
        Namespace=settings.metrics_namespace,
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": dimensions,
                "Timestamp": timestamp,
                "Value": float(value),
                "Unit": "None" if name in ("LogLossSum", "LogLossSquaredSum") else "Count",
            }
            for name, value in values.items()
        ],
    )


@dataclass(frozen=True)
class _Side:
    variant: str
    requests: int
    client_errors: int
    errors: int
    latency_mean_ms: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    labelled: int
    correct: int
    losses: int
    loss_sum: float
    loss_squared_sum: float
    bins: list[int]

    @property
    def successful(self) -> int:
        return max(0, self.requests - self.errors - self.client_errors)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def log_loss(self) -> float | None:
        return self.loss_sum / self.losses if self.losses else None

    @property
    def loss_std(self) -> float:
        if self.losses < 2:
            return 0.0
        variance = (self.loss_squared_sum - self.loss_sum**2 / self.losses) / (self.losses - 1)
        return math.sqrt(max(0.0, variance))

    @property
    def mean_score(self) -> float | None:
        total = sum(self.bins)
        if not total:
            return None
        centres = [(index + 0.5) / SHIFT_BINS for index in range(SHIFT_BINS)]
        return sum(c * n for c, n in zip(centres, self.bins, strict=True)) / total


class CloudWatchCanary:
    def __init__(self, clients: AwsClients, settings: SageMakerSettings) -> None:
        self.clients = clients
        self.settings = settings

    def analyse(self, request: CanaryRequest, heartbeat: Callable[[str], None]) -> CanaryStatistics:
        now = datetime.now(UTC)
        champ = self._side(request.champion, now, heartbeat)
        chal = self._side(request.challenger, now, heartbeat)
        return CanaryStatistics(
            champion=_summary(champ),
            challenger=_summary(chal),
            checks=[
                _sample_size(champ, chal),
                _error_rate(champ, chal),
                _latency(CheckName.LATENCY_P50, champ, chal),
                _latency(CheckName.LATENCY_P99, champ, chal),
                _accuracy(champ, chal),
                _log_loss(champ, chal),
                _prediction_shift(champ, chal),
            ],
            shadow=request.challenger.shadow,
        )

    # ---- reading CloudWatch --------------------------------------------------------------

    def _side(self, window: WindowRef, now: datetime, heartbeat: Callable[[str], None]) -> _Side:
        heartbeat(f"reading CloudWatch metrics of {window.variant} since {window.since}")
        start = window.since.astimezone(UTC)
        # One period over the whole window (a multiple of 60 s, as CloudWatch requires).
        period = max(60, math.ceil((now - start).total_seconds() / 60) * 60)
        end = start + timedelta(seconds=period)
        sums = self._sums(window.variant, start, end, period)
        p50, p99 = self._percentiles(window.variant, start, end, period)
        latency_count = sums["ModelLatency:SampleCount"]
        mean = sums["ModelLatency:Sum"] / latency_count if latency_count else None
        return _Side(
            variant=window.variant,
            requests=int(sums["Invocations:Sum"]),
            client_errors=int(sums["Invocation4XXErrors:Sum"]),
            errors=int(sums["Invocation5XXErrors:Sum"]),
            latency_mean_ms=None if mean is None else mean / MICROSECONDS_PER_MS,
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            labelled=int(sums["LabelledPredictions:Sum"]),
            correct=int(sums["CorrectPredictions:Sum"]),
            losses=int(sums["LogLossCount:Sum"]),
            loss_sum=sums["LogLossSum:Sum"],
            loss_squared_sum=sums["LogLossSquaredSum:Sum"],
            bins=[int(sums[f"{name}:Sum"]) for name in BIN_METRICS],
        )

    def _sums(self, variant: str, start: datetime, end: datetime, period: int) -> dict[str, float]:
        """Each metric's statistic over the window, keyed `Metric:Stat` (0 when no data)."""
        wanted = [(SAGEMAKER_NAMESPACE, name, "Sum") for name in SAGEMAKER_METRICS]
        wanted += [(SAGEMAKER_NAMESPACE, "ModelLatency", stat) for stat in ("Sum", "SampleCount")]
        wanted += [
            (self.settings.metrics_namespace, name, "Sum")
            for name in (*QUALITY_METRICS, *BIN_METRICS)
        ]
        dimensions = _dimensions(self.settings.endpoint_name, variant)
        queries = [
            {
                "Id": f"m{index}",
                "MetricStat": {
                    "Metric": {"Namespace": ns, "MetricName": name, "Dimensions": dimensions},
                    "Period": period,
                    "Stat": stat,
                },
                "ReturnData": True,
            }
            for index, (ns, name, stat) in enumerate(wanted)
        ]
        totals = [0.0] * len(wanted)
        with aws_call("GetMetricData"):
            pages = self.clients.cloudwatch.get_paginator("get_metric_data").paginate(
                MetricDataQueries=queries, StartTime=start, EndTime=end
            )
            for page in pages:
                for result in page.get("MetricDataResults", []):
                    totals[int(result["Id"][1:])] += math.fsum(result.get("Values", []))
        return {
            f"{name}:{stat}": total for (_, name, stat), total in zip(wanted, totals, strict=True)
        }

    def _percentiles(
        self, variant: str, start: datetime, end: datetime, period: int
    ) -> tuple[float | None, float | None]:
        """ModelLatency p50 and p99 in ms over the window; None where CloudWatch has none."""
        response: dict[str, Any] = call(
            "GetMetricStatistics",
            self.clients.cloudwatch.get_metric_statistics,
            Namespace=SAGEMAKER_NAMESPACE,
            MetricName="ModelLatency",
            Dimensions=_dimensions(self.settings.endpoint_name, variant),
            StartTime=start,
            EndTime=end,
            Period=period,
            ExtendedStatistics=["p50", "p99"],
        )
        points = [p.get("ExtendedStatistics", {}) for p in response.get("Datapoints", [])]
        # One period covers the window; percentiles of two periods cannot be merged.
        if len(points) != 1:
            return None, None
        values = points[0]

        def ms(key: str) -> float | None:
            value = values.get(key)
            return None if value is None else float(value) / MICROSECONDS_PER_MS

        return ms("p50"), ms("p99")


# ---- the checks ------------------------------------------------------------------------------


def _summary(side: _Side) -> VariantSummary:
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
        mean_prediction=side.mean_score,
    )


def _sample_size(champ: _Side, chal: _Side) -> CheckStatistic:
    return CheckStatistic(
        name=CheckName.SAMPLE_SIZE,
        champion=champ.requests,
        challenger=chal.requests,
        samples=min(champ.requests, chal.requests),
        detail=f"{chal.requests} invocations on the challenger, {champ.requests} on the champion",
    )


def _error_rate(champ: _Side, chal: _Side) -> CheckStatistic:
    name = CheckName.ERROR_RATE
    if not (champ.requests and chal.requests):
        return CheckStatistic(name=name, detail="no invocations on " + _empty(champ, chal))
    return CheckStatistic(
        name=name,
        champion=champ.error_rate,
        challenger=chal.error_rate,
        difference=chal.error_rate - champ.error_rate,
        p_value=greater_proportion_p(chal.errors, chal.requests, champ.errors, champ.requests),
        samples=min(champ.requests, chal.requests),
        detail=(
            f"{chal.errors} 5XX in {chal.requests} invocations on the challenger "
            f"({chal.error_rate:.2%}), {champ.errors} in {champ.requests} on the champion "
            f"({champ.error_rate:.2%}); pooled two-proportion z-test, one-sided"
        ),
    )


def _empty(champ: _Side, chal: _Side, attribute: str = "requests") -> str:
    sides = [
        s for s, side in (("challenger", chal), ("champion", champ)) if not getattr(side, attribute)
    ]
    return " and the ".join(sides) or "either side"


def _latency(name: CheckName, champ: _Side, chal: _Side) -> CheckStatistic:
    key = "latency_p50_ms" if name is CheckName.LATENCY_P50 else "latency_p99_ms"
    label = "p50" if name is CheckName.LATENCY_P50 else "p99"
    champ_value, chal_value = getattr(champ, key), getattr(chal, key)
    source = f"CloudWatch {label} of ModelLatency"
    if champ_value is None or chal_value is None:
        champ_value, chal_value = champ.latency_mean_ms, chal.latency_mean_ms
        source = f"mean ModelLatency (CloudWatch returned no {label})"
    if champ_value is None or chal_value is None:
        return CheckStatistic(
            name=name, detail="no ModelLatency data on " + _latency_gap(champ, chal)
        )
    ratio = chal_value / champ_value if champ_value > 0 else (1.0 if chal_value <= 0 else None)
    return CheckStatistic(
        name=name,
        champion=champ_value,
        challenger=chal_value,
        difference=ratio,
        p_value=None,
        samples=min(champ.successful, chal.successful),
        detail=(
            f"{source}: {chal_value:.4g} ms on the challenger, {champ_value:.4g} ms on the "
            "champion; no p-value: CloudWatch keeps no per-request latencies to test on"
        ),
    )


def _latency_gap(champ: _Side, chal: _Side) -> str:
    sides = [
        role
        for role, side in (("challenger", chal), ("champion", champ))
        if side.latency_mean_ms is None
    ]
    return " and the ".join(sides) or "either side"


def _accuracy(champ: _Side, chal: _Side) -> CheckStatistic:
    name = CheckName.ACCURACY
    acc_champ, acc_chal = champ.accuracy, chal.accuracy
    if acc_champ is None or acc_chal is None:
        return CheckStatistic(
            name=name, detail="no labelled prediction yet on " + _empty(champ, chal, "labelled")
        )
    return CheckStatistic(
        name=name,
        champion=acc_champ,
        challenger=acc_chal,
        difference=acc_champ - acc_chal,
        p_value=greater_proportion_p(champ.correct, champ.labelled, chal.correct, chal.labelled),
        samples=min(champ.labelled, chal.labelled),
        detail=(
            f"{chal.correct} of {chal.labelled} labelled predictions right on the challenger "
            f"({acc_chal:.2%}), {champ.correct} of {champ.labelled} on the champion "
            f"({acc_champ:.2%}); pooled two-proportion z-test, one-sided"
        ),
    )


def _log_loss(champ: _Side, chal: _Side) -> CheckStatistic:
    name = CheckName.LOG_LOSS
    loss_champ, loss_chal = champ.log_loss, chal.log_loss
    if loss_champ is None or loss_chal is None:
        return CheckStatistic(
            name=name, detail="no labelled score yet on " + _empty(champ, chal, "losses")
        )
    p_value: float | None = None
    if champ.losses >= 2 and chal.losses >= 2 and (champ.loss_std > 0 or chal.loss_std > 0):
        result = scipy.stats.ttest_ind_from_stats(
            loss_chal,
            chal.loss_std,
            chal.losses,
            loss_champ,
            champ.loss_std,
            champ.losses,
            equal_var=False,
            alternative="greater",
        )
        p_value = float(result.pvalue) if math.isfinite(result.pvalue) else None
    if p_value is None:
        # One loss a side, or no spread: the means are compared as they are.
        p_value = 0.0 if loss_chal > loss_champ else 1.0
    return CheckStatistic(
        name=name,
        champion=loss_champ,
        challenger=loss_chal,
        difference=loss_chal - loss_champ,
        p_value=p_value,
        samples=min(champ.losses, chal.losses),
        detail=(
            f"mean log loss {loss_chal:.4f} over {chal.losses} labelled scores on the challenger, "
            f"{loss_champ:.4f} over {champ.losses} on the champion; Welch t-test from the sums, "
            "one-sided"
        ),
    )


def _prediction_shift(champ: _Side, chal: _Side) -> CheckStatistic:
    name = CheckName.PREDICTION_SHIFT
    champ_total, chal_total = sum(champ.bins), sum(chal.bins)
    if not (champ_total and chal_total):
        sides = [s for s, n in (("challenger", chal_total), ("champion", champ_total)) if not n]
        return CheckStatistic(
            name=name, detail="no published prediction scores on the " + " and the ".join(sides)
        )
    table = np.array([chal.bins, champ.bins], dtype=np.float64)
    distance = float(jensenshannon(table[0], table[1], base=2))
    occupied = table[:, table.sum(axis=0) > 0]
    p_value = 1.0
    if occupied.shape[1] >= 2:
        p_value = float(scipy.stats.chi2_contingency(occupied, correction=False).pvalue)
    return CheckStatistic(
        name=name,
        champion=champ.mean_score,
        challenger=chal.mean_score,
        difference=distance if math.isfinite(distance) else None,
        p_value=p_value,
        samples=min(champ_total, chal_total),
        detail=(
            f"Jensen-Shannon distance {distance:.4f} (base 2) between the score histograms "
            f"({SHIFT_BINS} equal bins on [0, 1]) of {chal_total} challenger and {champ_total} "
            "champion predictions; chi-square test of the histograms"
        ),
    )
