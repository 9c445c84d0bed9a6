"""The RetrainingLoop's messages: its contract with the coordinator, and with its activities.

The coordinator starts `RetrainingLoop` (id `retrain-<model>-<n>`) with a `RetrainingLoopInput`
and learns how it ended from its result, a `LoopResult`. The loop's steps exchange the requests
and results below with their activities (data window, training, registry, evaluation).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, JsonValue
from temporalio.exceptions import CancelledError, TerminatedError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from workflows.common.models import StrictModel
from workflows.coordinator.triggers import (
    DataArrival,
    DriftSignal,
    PerformanceSignal,
    Severity,
    TriggerKind,
)
from workflows.spec.models import Metric, ModelSpec


class EventRef(StrictModel):
    """An accepted trigger event, as carried by batches, deferrals and loops."""

    event_id: str
    kind: TriggerKind
    priority: int
    source: str
    received_at: AwareDatetime
    # When the sender says it happened (event latency is received_at - occurred_at).
    occurred_at: AwareDatetime | None = None
    # The sender's metadata (labels, endpoints, violation counts), up to
    # CARRIED_METADATA_BYTES per event; larger metadata is replaced by a note of its size and
    # keys (a thousand waiting events must fit through continue-as-new and into the loop).
    metadata: dict[str, JsonValue] = {}
    # One line about it: an alarm's reason, a drift's score and endpoint.
    summary: Annotated[str, Field(max_length=500)] | None = None


class AdaptiveRecord(StrictModel):
    """The adaptive policy's decision behind a loop: its sentence ("retrain v7: excess loss
    since v7: 412 EUR; expected excess cost ... >= retraining cost 380 EUR") and its numbers."""

    reason: Annotated[str, Field(max_length=2000)]
    numbers: dict[str, float | int | str | bool | None] = {}


class TriggerContext(StrictModel):
    """Why a loop runs: every event it answers, merged (highest priority, union of the data)."""

    events: list[EventRef]
    priority: Annotated[int, Field(ge=1, le=5)]
    kinds: list[TriggerKind]
    data: list[DataArrival] = []
    drift: DriftSignal | None = None
    drift_severity: Severity | None = None
    alarms: list[str] = []
    requires_approval: bool = False
    approval_reasons: list[str] = []
    origin: str
    # Degraded quality on labelled traffic (the most severe of the events answered).
    performance: PerformanceSignal | None = None
    # The latest regime change the coordinator knows of (a performance or drift change point):
    # the loop's data window starts there, the baseline is a floor, not a majority.
    regime_start: AwareDatetime | None = None
    # The adaptive policy's decision, when the coordinator decides adaptively.
    adaptive: AdaptiveRecord | None = None

    @property
    def change_at(self) -> datetime | None:
        """Where this loop's own triggers located a change (performance or drift)."""
        moments = [
            moment
            for moment in (
                self.performance.change_at if self.performance else None,
                self.drift.change_at if self.drift else None,
            )
            if moment is not None
        ]
        return max(moments, default=None)


class RetrainingLoopInput(StrictModel):
    model: str
    loop_number: int
    coordinator_id: str
    trigger: TriggerContext
    estimated_cost: float
    policy_version: int


class LoopStatus(StrEnum):
    PROMOTED = "promoted"
    REJECTED_BY_GATE = "rejected_by_gate"
    REJECTED_BY_REVIEWER = "rejected_by_reviewer"
    INSUFFICIENT_DATA = "insufficient_data"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    CANCELLED = "cancelled"


class LoopResult(StrictModel):
    loop_id: str
    status: LoopStatus
    summary: Annotated[str, Field(max_length=4000)] = ""
    # Actual cost when the backend knows it; the coordinator corrects the day's spend with it.
    actual_cost: Annotated[float, Field(ge=0)] | None = None
    finished_at: datetime | None = None
    # Reproducibility: the exact retrieval (query and listing) and every dataset's hash.
    retrieval_query: str = ""
    dataset_hashes: dict[str, str] = {}
    candidate_version: str | None = None
    audit_uri: str | None = None
    # The promoted candidate's loss per labelled prediction (0/1 error of a classifier, absolute
    # error of a regressor) on the newest data of its evaluation, and over how many rows: what
    # a fresh model achieves, for the adaptive policy.
    candidate_loss: Annotated[float, Field(ge=0)] | None = None
    candidate_loss_rows: Annotated[int, Field(ge=0)] | None = None


def result_from_failure(loop_id: str, error: BaseException) -> LoopResult:
    """Map a closed-with-error loop to a LoopResult the coordinator can record."""
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, CancelledError):
        status, summary = LoopStatus.CANCELLED, "loop was cancelled"
    elif isinstance(cause, TerminatedError):
        status, summary = LoopStatus.FAILED, f"loop was terminated: {cause.message}"
    elif isinstance(cause, TemporalTimeoutError):
        status, summary = LoopStatus.FAILED, "loop timed out"
    else:
        status, summary = LoopStatus.FAILED, f"loop failed: {cause}"
    return LoopResult(loop_id=loop_id, status=status, summary=summary[:4000])


class DatasetFile(StrictModel):
    """One file read or written by the loop, with its content hash (reproducibility)."""

    uri: str
    sha256: str
    rows: int
    day: date | None = None
    # The object store's fingerprint (S3 ETag, GCS md5) of a file read from a bucket.
    etag: str | None = None


class CoverageCheck(StrictModel):
    name: str
    passed: bool
    value: float
    threshold: float
    detail: str = ""


# ---- data window ---------------------------------------------------------------------------


class DataWindowRequest(StrictModel):
    loop_id: str
    spec: ModelSpec
    # The workflow's time, so a retried activity selects the same window.
    as_of: AwareDatetime
    # Extra files the trigger named (data_arrived events), read besides the window.
    extra_uris: list[str] = []
    # A regime change (change point): the window starts there, rows before it are left out,
    # and baseline rows are a floor (`regime_baseline_share`), not a majority.
    regime_start: AwareDatetime | None = None


class DataWindow(StrictModel):
    # The exact retrieval: the query text and every file listed, with hashes.
    query: str
    files: list[DatasetFile]
    start: date
    end: date
    rows: int
    labelled_rows: int
    days_present: int
    days_expected: int
    class_counts: dict[str, int] = {}
    checks: list[CoverageCheck]
    sufficient: bool
    # Written only when sufficient: what training and evaluation read.
    training_set: DatasetFile | None = None
    holdout_set: DatasetFile | None = None
    baseline_eval_set: DatasetFile | None = None
    baseline: DatasetFile | None = None
    production_rows_in_training: int = 0
    baseline_rows_in_training: int = 0
    # The regime change the window starts at (None: the last `days` days, no change known).
    regime_start: AwareDatetime | None = None
    # The newest part of the holdout (the most recent labelled data, never trained on) and
    # captured live traffic with its feedback labels (replayed), when there are enough rows.
    recent_set: DatasetFile | None = None
    replay_set: DatasetFile | None = None
    notes: list[str] = []


class GoldenSet(StrictModel):
    """The immutable golden set: registered once with its hash, verified before evaluation."""

    uri: str
    sha256: str
    rows: int
    registered_at: datetime


# ---- training ------------------------------------------------------------------------------


class TrainingRequest(StrictModel):
    """What the user's training entrypoint receives (SageMaker script mode, typed)."""

    model: str
    loop_id: str
    task: str
    train_path: str
    validation_path: str
    features: list[str]
    categorical_features: list[str] = []
    label: str
    hyperparameters: dict[str, str | int | float | bool] = {}
    output_dir: str
    seed: int = 0


class TrainingOutput(StrictModel):
    """What the entrypoint returns: the saved artifact and the metrics it measured."""

    artifact_path: str
    metrics: dict[str, float] = {}


class TrainingJob(StrictModel):
    """The activity's input: the request plus the entrypoint to run."""

    entrypoint: str
    request: TrainingRequest
    timeout_seconds: float
    # Chargeback tags for every cloud resource the training creates (model, loop id, trigger).
    tags: dict[str, str] = {}
    # What started the loop, as a cloud pipeline's parameters: trigger_type, trigger_reason,
    # event_count, drift_severity (as in SageMaker Pipelines' parameter lists: strings).
    parameters: dict[str, str] = {}


class TrainingResult(StrictModel):
    artifact_path: str
    artifact_sha256: str
    metrics: dict[str, float] = {}
    duration_seconds: float
    backend: str
    # True when a finished or running training for this loop id was found and reused.
    reused: bool = False
    cost: float | None = None


# ---- registry ------------------------------------------------------------------------------


class Lineage(StrictModel):
    loop_id: str
    trigger_origin: str
    trigger_kinds: list[str]
    trigger_event_ids: list[str]
    dataset_hashes: dict[str, str]
    training_metrics: dict[str, float]
    parent_champion: str | None = None
    spec_hash: str


class RegisterRequest(StrictModel):
    model: str
    loop_id: str
    artifact_path: str
    artifact_sha256: str
    lineage: Lineage


class ModelVersion(StrictModel):
    model: str
    version: str
    # Where the artifact can be loaded from (an MLflow `models:/` uri or a path).
    source: str
    loop_id: str | None = None
    aliases: list[str] = []
    # When the registry took the version in, right after its training: the model's age.
    registered_at: AwareDatetime | None = None


class PromoteRequest(StrictModel):
    model: str
    version: str
    loop_id: str


class RejectRequest(StrictModel):
    """A candidate the loop did not promote (gate, reviewer, rollback): the registry says so."""

    model: str
    version: str
    loop_id: str
    reason: Annotated[str, Field(max_length=4000)]


class Promotion(StrictModel):
    model: str
    champion: str
    previous_champion: str | None = None


# ---- evaluation ----------------------------------------------------------------------------


class EvaluationRequest(StrictModel):
    loop_id: str
    spec: ModelSpec
    candidate: ModelVersion
    champion: ModelVersion | None
    holdout: DatasetFile
    baseline_eval: DatasetFile
    golden: GoldenSet
    seed: int = 0
    # Also scored (and bootstrapped against the champion) when the window has them.
    recent: DatasetFile | None = None
    replay: DatasetFile | None = None
    # Metrics bootstrapped besides the policy's (the quality a performance trigger found
    # degraded, which the gate asks the candidate to improve).
    extra_metrics: list[Metric] = []


class MetricDelta(StrictModel):
    """candidate - champion on one dataset, oriented so that positive is better."""

    metric: Metric
    dataset: str
    candidate: float
    champion: float
    delta: float
    ci_low: float
    ci_high: float


class EvaluationReport(StrictModel):
    # dataset name ("holdout", "golden", "baseline") -> metric -> value
    candidate: dict[str, dict[str, float]]
    champion: dict[str, dict[str, float]] | None = None
    rows: dict[str, int]
    deltas: list[MetricDelta] = []
    # Prediction distributions on the holdout over the same bins (probability of the positive
    # class, or the regression output), as counts.
    prediction_bins: list[float] = []
    candidate_prediction_counts: list[int] = []
    champion_prediction_counts: list[int] = []
    # The candidate's errors on the holdout per segment (segment column, else error type).
    errors_by_segment: dict[str, int] = {}
    segment_source: str = ""


class SafetyCheck(StrictModel):
    name: str
    passed: bool
    numbers: dict[str, float]
    near_miss: bool = False
    detail: str = ""


class GateVerdict(StrictModel):
    passed: bool
    checks: list[SafetyCheck]
    regressions: list[str] = []
    near_misses: list[str] = []
    summary: Annotated[str, Field(max_length=4000)] = ""


# ---- approval, audit -----------------------------------------------------------------------


class ReviewOrigin(StrictModel):
    """Where an approve/reject came from when a bridge sent it for a person (the gateway's
    Slack button handler): the channel and that person's identity there. Informational, as
    every sender's claims are: who may send updates at all is Temporal's authorisation."""

    channel: Literal["slack"]
    user_id: Annotated[str, Field(min_length=1, max_length=64)]
    user_name: Annotated[str, Field(max_length=200)] = ""
    team_id: Annotated[str, Field(max_length=64)] | None = None


class ReviewDecision(StrictModel):
    """Payload of `approve` / `reject` (signal or update)."""

    reviewer: Annotated[str, Field(max_length=200)]
    comment: Annotated[str, Field(max_length=2000)] = ""
    # Set by a bridge acting for a person elsewhere (a Slack button); kept in the audit record.
    origin: ReviewOrigin | None = None
