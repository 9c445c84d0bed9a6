"""The canary analysis of a SageMaker endpoint, from CloudWatch metrics.

`CloudWatchCanary.analyse` reads each variant's window (since its `WindowRef.since`, until now)
into `activities.rollout.counts.VariantCounts`, from counts and sums instead of per-request rows:

- AWS/SageMaker (dimensions EndpointName, VariantName): Invocations, Invocation4XXErrors,
  Invocation5XXErrors (Sum) and ModelLatency (microseconds; Sum and SampleCount for the mean),
  in one GetMetricData call per variant with a single period covering the window. Errors are
  the 5XX answers of the model, as the local backend counts them (4XX are the callers' fault;
  InvocationModelErrors would count client errors too).
- Latency p50 / p99 from GetMetricStatistics ExtendedStatistics over the same single period;
  where percentiles are absent (moto has none) the mean latency stands in.
- Labelled quality (accuracy, log loss) and the prediction shift from the endpoint's Data
  Capture joined with Model Monitor ground truth (`activities.rollout.captured`), so a stage
  decides with no feedback job of the user's.
- Optionally, quality metrics in `settings.metrics_namespace`, same dimensions, published by
  `publish_quality` (LabelledPredictions, CorrectPredictions, LogLossCount, LogLossSum,
  LogLossSquaredSum and PredictionBin00..PredictionBin19, a histogram of the positive-class
  score in 20 equal bins on [0, 1]): used where the capture has no answer of a variant.

The tests on these counts are `activities.rollout.counts.count_statistics`, combined with the
captured rows' by `with_captured_quality`. CloudWatch rounds a
start time down to the minute, so a window may take in up to a minute of the previous stage's
traffic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from activities.aws.clients import AwsClients
from activities.aws.errors import aws_call, call
from activities.ports import CaptureSource, MetricSource
from activities.rollout.captured import captured_comparison
from activities.rollout.counts import (
    VariantCounts,
    count_statistics,
    score_histogram,
    with_captured_quality,
)
from activities.rollout.statistics import SHIFT_BINS
from workflows.rollout.models import CanaryRequest, CanaryStatistics, WindowRef
from workflows.spec.sagemaker import SageMakerSettings

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
SOURCE = MetricSource(
    store="CloudWatch", latency="ModelLatency", requests="invocations", errors="5XX"
)


def _dimensions(endpoint: str, variant: str) -> list[dict[str, str]]:
    return [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]


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
    bins = score_histogram(scores)
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


class CloudWatchCanary:
    def __init__(
        self,
        clients: AwsClients,
        settings: SageMakerSettings,
        capture: CaptureSource | None = None,
        home: Path | None = None,
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.capture = capture
        self.home = home

    def analyse(self, request: CanaryRequest, heartbeat: Callable[[str], None]) -> CanaryStatistics:
        now = datetime.now(UTC)
        champion = self._counts(request.champion, now, heartbeat)
        challenger = self._counts(request.challenger, now, heartbeat)
        counted = count_statistics(
            champion, challenger, shadow=request.challenger.shadow, source=SOURCE
        )
        if self.capture is None or self.home is None:
            return counted
        captured = captured_comparison(self.capture, self.home, request, heartbeat)
        return counted if captured is None else with_captured_quality(counted, captured)

    # ---- reading CloudWatch --------------------------------------------------------------

    def _counts(
        self, window: WindowRef, now: datetime, heartbeat: Callable[[str], None]
    ) -> VariantCounts:
        heartbeat(f"reading CloudWatch metrics of {window.variant} since {window.since}")
        start = window.since.astimezone(UTC)
        # One period over the whole window (a multiple of 60 s, as CloudWatch requires).
        period = max(60, math.ceil((now - start).total_seconds() / 60) * 60)
        end = start + timedelta(seconds=period)
        sums = self._sums(window.variant, start, end, period)
        p50, p99 = self._percentiles(window.variant, start, end, period)
        latency_count = sums["ModelLatency:SampleCount"]
        mean = sums["ModelLatency:Sum"] / latency_count if latency_count else None
        return VariantCounts(
            variant=window.variant,
            requests=int(sums["Invocations:Sum"]),
            errors=int(sums["Invocation5XXErrors:Sum"]),
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            labelled=int(sums["LabelledPredictions:Sum"]),
            correct=int(sums["CorrectPredictions:Sum"]),
            losses=int(sums["LogLossCount:Sum"]),
            loss_sum=sums["LogLossSum:Sum"],
            loss_squared_sum=sums["LogLossSquaredSum:Sum"],
            bins=tuple(int(sums[f"{name}:Sum"]) for name in BIN_METRICS),
            latency_mean_ms=None if mean is None else mean / MICROSECONDS_PER_MS,
            client_errors=int(sums["Invocation4XXErrors:Sum"]),
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
