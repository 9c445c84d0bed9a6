"""The worker's Prometheus endpoint: the Temporal SDK's own metrics and ours
(workflows/common/metrics.py), served by the SDK's runtime, so one scrape target per worker
process."""

from __future__ import annotations

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from workflows.common.metrics import CATALOG


def metrics_runtime(bind_address: str) -> Runtime:
    """A runtime serving `/metrics` on `bind_address` (host:port). Durations in seconds, the
    Prometheus convention; our histograms get buckets that fit them (the SDK's defaults are for
    milliseconds-long tasks, not hours-long trainings)."""
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=bind_address,
                durations_as_seconds=True,
                histogram_bucket_overrides={
                    metric.name: list(metric.buckets) for metric in CATALOG if metric.buckets
                },
            )
        )
    )
