"""Our metrics, in one catalog: names, kinds, labels and what each one means.

Workflows and activities record them through the Temporal SDK's metric meter
(`workflow.metric_meter()`, `activity.metric_meter()`), so they come out of the same Prometheus
endpoint as the SDK's own `temporal_*` metrics (see workers/telemetry.py), and a workflow's
metrics are not recorded again when its history is replayed. The Grafana dashboard and the
compose test read names from here.

Timestamps rather than ages (`*_timestamp_seconds`): a worker records what it saw when it saw
it, Prometheus computes the age (`time() - max by (model) (...)`), and the maximum across worker
replicas is right because these only move forward.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from temporalio import activity
from temporalio.common import MetricMeter

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...]
    # Floats for gauges and histograms (costs, scores, seconds); counters are integers.
    buckets: tuple[float, ...] = ()


TRIGGER_EVENTS = Metric(
    "retrain_trigger_events_total",
    "counter",
    "Trigger events received by coordinators, by kind",
    ("model", "kind"),
)
EVENT_LATENCY = Metric(
    "retrain_event_latency_seconds",
    "histogram",
    "From a trigger's occurred_at (as its sender says) to the coordinator's decision on it",
    ("model", "kind"),
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 21600, 86400),
)
DECISIONS = Metric(
    "retrain_decisions_total",
    "counter",
    "Coordinator decisions, by action and reason",
    ("model", "action", "reason"),
)
LOOPS_FINISHED = Metric(
    "retrain_loops_finished_total",
    "counter",
    "Retraining loops that ended, by status",
    ("model", "status"),
)
DRIFT_SCORE = Metric(
    "retrain_drift_score",
    "gauge",
    "Latest drift score per feature (PSI for numeric, Jensen-Shannon for categorical)",
    ("model", "feature"),
)
DRIFT_CHECKED = Metric(
    "retrain_drift_checked_timestamp_seconds",
    "gauge",
    "When this worker last set retrain_drift_score for the model (Unix time): dashboards read "
    "the replica that checked last",
    ("model",),
)
TRAINING_DURATION = Metric(
    "retrain_training_duration_seconds",
    "histogram",
    "Wall time of a training job, from submission to a trained model",
    ("model", "backend"),
    buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400),
)
TRAINING_COST = Metric(
    "retrain_training_cost_usd",
    "histogram",
    "Cost of a training job in USD (the estimate when the backend reports none); "
    "`_sum` is the total spent",
    ("model", "backend"),
    buckets=(0.01, 0.1, 0.5, 1, 5, 10, 50, 100, 500),
)
ADAPTIVE_DECISIONS = Metric(
    "retrain_adaptive_decisions_total",
    "counter",
    "Decisions of the cost-aware adaptive policy, by outcome (retrain or keep)",
    ("model", "decision"),
)
ADAPTIVE_EXCESS_COST = Metric(
    "retrain_adaptive_expected_excess_cost",
    "gauge",
    "The adaptive policy's latest forecast of what keeping the serving model costs beyond a "
    "fresh one (lower confidence bound, in the cost model's currency)",
    ("model",),
)
ADAPTIVE_RETRAINING_COST = Metric(
    "retrain_adaptive_retraining_cost",
    "gauge",
    "What one retraining costs the adaptive policy (estimate or last real cost, plus overhead)",
    ("model",),
)
APPROVALS_REQUESTED = Metric(
    "retrain_approvals_requested_total",
    "counter",
    "Candidates that stopped at the approval gate",
    ("model",),
)
APPROVALS_RESOLVED = Metric(
    "retrain_approvals_resolved_total",
    "counter",
    "Approval gates that ended, by outcome (approved, rejected, timed_out)",
    ("model", "outcome"),
)
APPROVALS_WAITING = Metric(
    "retrain_approvals_waiting",
    "gauge",
    "Loops waiting for a reviewer now (from Temporal visibility)",
    ("model",),
)
APPROVAL_WAIT = Metric(
    "retrain_approval_wait_seconds",
    "gauge",
    "How long the model's candidate has waited for a reviewer (0 when none waits)",
    ("model",),
)
ROLLOUT_VERDICTS = Metric(
    "retrain_rollout_verdicts_total",
    "counter",
    "Canary verdicts at rollout stages, by verdict (pass, fail, inconclusive)",
    ("model", "verdict"),
)
ROLLBACKS = Metric(
    "retrain_rollbacks_total",
    "counter",
    "Rollouts rolled back to the champion",
    ("model",),
)
CHAMPION_TRAINED = Metric(
    "retrain_champion_trained_timestamp_seconds",
    "gauge",
    "When the serving champion was trained (Unix time): model age is time() minus this",
    ("model",),
)
DATA_NEWEST = Metric(
    "retrain_data_newest_timestamp_seconds",
    "gauge",
    "The newest labelled data partition seen for the model (Unix time): staleness is "
    "time() minus this",
    ("model",),
)
SCHEDULE_RUNS = Metric(
    "retrain_schedule_runs_total",
    "counter",
    "Scheduled runs, by outcome (delivered: the coordinator got its scheduled trigger)",
    ("model", "outcome"),
)
SCHEDULE_MISSED = Metric(
    "retrain_schedule_missed_runs_total",
    "counter",
    "Scheduled runs Temporal missed (outside the catch-up window)",
    ("model",),
)
SCHEDULE_SKIPPED = Metric(
    "retrain_schedule_skipped_runs_total",
    "counter",
    "Scheduled runs Temporal skipped by the overlap policy",
    ("model",),
)
DATA_STALE = Metric(
    "retrain_data_stale",
    "gauge",
    "1 when the model's newest data was older than its schedule allows at the last check",
    ("model",),
)
DATA_CHECKED = Metric(
    "retrain_data_checked_timestamp_seconds",
    "gauge",
    "When this worker last set retrain_data_stale for the model (Unix time): alerts read the "
    "replica that checked last",
    ("model",),
)
TRAINING_SLOTS_LIMIT = Metric(
    "retrain_training_slots_limit",
    "gauge",
    "The global limit of concurrent trainings",
    (),
)
TRAINING_SLOTS_IN_USE = Metric(
    "retrain_training_slots_in_use",
    "gauge",
    "Trainings holding a slot now",
    (),
)
TRAINING_SLOTS_WAITING = Metric(
    "retrain_training_slots_waiting",
    "gauge",
    "Loops waiting for a training slot now",
    (),
)
TRAINING_SLOTS_UPDATED = Metric(
    "retrain_training_slots_updated_timestamp_seconds",
    "gauge",
    "When this worker last set the training-slot gauges (Unix time): dashboards read the "
    "replica that updated last",
    (),
)
TRAINING_SLOT_WAIT = Metric(
    "retrain_training_slot_wait_seconds",
    "histogram",
    "How long a loop waited for its training slot",
    ("model",),
    buckets=(1, 10, 60, 300, 900, 1800, 3600, 7200, 14400),
)
SCALING_EVENTS = Metric(
    "retrain_scaling_events_total",
    "counter",
    "Scaling activities of a model's endpoint (the platform's scaler or our scheduled "
    "pre-scaling), by kind (policy, scheduled) and status",
    ("model", "backend", "kind", "status"),
)
ENDPOINT_CAPACITY = Metric(
    "retrain_endpoint_capacity",
    "gauge",
    "Instances / replicas a scaling event set a variant to (desired capacity)",
    ("model", "variant"),
)

CATALOG: tuple[Metric, ...] = (
    TRIGGER_EVENTS,
    EVENT_LATENCY,
    DECISIONS,
    ADAPTIVE_DECISIONS,
    ADAPTIVE_EXCESS_COST,
    ADAPTIVE_RETRAINING_COST,
    LOOPS_FINISHED,
    DRIFT_SCORE,
    DRIFT_CHECKED,
    TRAINING_DURATION,
    TRAINING_COST,
    APPROVALS_REQUESTED,
    APPROVALS_RESOLVED,
    APPROVALS_WAITING,
    APPROVAL_WAIT,
    ROLLOUT_VERDICTS,
    ROLLBACKS,
    CHAMPION_TRAINED,
    DATA_NEWEST,
    SCHEDULE_RUNS,
    SCHEDULE_MISSED,
    SCHEDULE_SKIPPED,
    DATA_STALE,
    DATA_CHECKED,
    TRAINING_SLOTS_LIMIT,
    TRAINING_SLOTS_IN_USE,
    TRAINING_SLOTS_WAITING,
    TRAINING_SLOTS_UPDATED,
    TRAINING_SLOT_WAIT,
    SCALING_EVENTS,
    ENDPOINT_CAPACITY,
)

Labels = Mapping[str, str]


def activity_meter() -> MetricMeter:
    """The running activity's meter; a no-op one when an activity's method is called directly
    (tests, scripts): what it measures only means something inside a worker."""
    return activity.metric_meter() if activity.in_activity() else MetricMeter.noop


def _check(metric: Metric, kind: Kind, labels: Labels) -> None:
    if metric.kind != kind or set(labels) != set(metric.labels):
        raise ValueError(f"{metric.name} is a {metric.kind} labelled {metric.labels}")


def count(meter: MetricMeter, metric: Metric, labels: Labels, value: int = 1) -> None:
    _check(metric, "counter", labels)
    meter.create_counter(metric.name, metric.description).add(value, labels)


def set_gauge(meter: MetricMeter, metric: Metric, labels: Labels, value: float) -> None:
    _check(metric, "gauge", labels)
    meter.create_gauge_float(metric.name, metric.description).set(value, labels)


def observe(meter: MetricMeter, metric: Metric, labels: Labels, value: float) -> None:
    _check(metric, "histogram", labels)
    meter.create_histogram_float(metric.name, metric.description).record(value, labels)
