"""Performance monitoring messages: the policy, the measured numbers, the report and the signal.

A performance check measures how well the champion does on the labelled traffic it answered
(captured predictions joined with their feedback labels), with confidence intervals, beside the
quality recorded when it was promoted (`reference`); a sequential change detector watches the
per-prediction loss stream; a label-free estimate (confidence-based) covers predictions whose
labels have not arrived. The activities compute these numbers (numpy side); the verdict over
them is `workflows.performance_rules.assess_performance`, a pure function the workflow runs.

Field names are the public JSON contract (the monitor's `status` query, the trigger's
`performance` object).
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AwareDatetime, Field, model_validator

from workflows.common.models import Duration, StrictModel
from workflows.coordinator.triggers import PerformanceBasis, PerformanceSignal, Severity
from workflows.spec.metrics import Metric, Task

Probability = Annotated[float, Field(ge=0, le=1)]
Count = Annotated[int, Field(ge=0)]
MAX_PROBLEMS = 20
MAX_CHANGES = 20
# What a degradation verdict rests on; the trigger's `performance` object (its message lives
# beside the other trigger payloads, re-exported here).
Basis = PerformanceBasis
__all__ = ["Basis", "PerformanceSignal"]


class LossKind(StrEnum):
    """The per-prediction loss the change detector watches. 0/1 error is bounded by nature;
    the others are divided by a stated upper bound (and clipped to it) before detection."""

    ZERO_ONE = "zero_one"
    LOG_LOSS = "log_loss"
    SQUARED_ERROR = "squared_error"
    ABSOLUTE_ERROR = "absolute_error"

    def applies_to(self, task: Task) -> bool:
        if self in (LossKind.ZERO_ONE, LossKind.LOG_LOSS):
            return task is Task.CLASSIFICATION
        return task is Task.REGRESSION


class IntervalMethod(StrEnum):
    # Wilson score interval of a proportion (accuracy, binary precision and recall).
    WILSON = "wilson"
    # Bootstrap percentile interval (every other metric).
    BOOTSTRAP = "bootstrap"


class MetricQuality(StrictModel):
    """One metric on one stretch of labelled traffic, with its interval at `confidence`."""

    metric: Metric
    value: float
    ci_low: float
    ci_high: float
    confidence: Annotated[float, Field(gt=0, lt=1)]
    method: IntervalMethod
    rows: Count
    # The champion's quality when it was promoted (same metric), when recorded.
    reference: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.ci_low <= self.value <= self.ci_high:
            raise ValueError(
                f"{self.metric.value}: value {self.value} outside its interval "
                f"[{self.ci_low}, {self.ci_high}]"
            )
        return self


class DetectorMethod(StrEnum):
    ADWIN = "adwin"


class ChangePoint(StrictModel):
    """One change the detector found. `index` is the first observation of the new regime (the
    least-squares estimate over the stretch the detector examined), `detected_index` the
    observation at which the detector fired; the delay is their difference."""

    index: Count
    detected_index: Count
    at: AwareDatetime | None = None
    detected_at: AwareDatetime | None = None
    # Mean loss of the stretch before the change (since the previous change) and after it (up
    # to the next change or the end of the stream).
    mean_before: float
    mean_after: float

    @property
    def degraded(self) -> bool:
        return self.mean_after > self.mean_before


class DetectorState(StrictModel):
    """A sequential change detector run over a loss stream (time order), and what it found."""

    method: DetectorMethod = DetectorMethod.ADWIN
    loss: LossKind
    # The losses were divided by this bound (clipped to it) so they lie in [0, 1]; 1 for 0/1.
    loss_scale: Annotated[float, Field(gt=0)] = 1.0
    # Probability of any false alarm over `horizon` observations of a stationary stream.
    false_alarm_rate: Probability
    horizon: Annotated[int, Field(ge=1)]
    # The detector's own parameters, derived from the two above.
    delta: Probability
    clock: Annotated[int, Field(ge=1)]
    observations: Count
    mean: float | None = None
    # Every change found, oldest first (at most MAX_CHANGES, the latest kept).
    changes: Annotated[list[ChangePoint], Field(max_length=MAX_CHANGES)] = []

    @property
    def detected(self) -> bool:
        return bool(self.changes)

    @property
    def last_change(self) -> ChangePoint | None:
        return self.changes[-1] if self.changes else None

    @property
    def degraded(self) -> bool:
        """The latest change made the loss worse (an improvement is not an alarm)."""
        last = self.last_change
        return last is not None and last.degraded


class ReliabilityBin(StrictModel):
    """Reference rows whose score fell in [lower, upper): the mean score vs the observed rate."""

    lower: Probability
    upper: Probability
    rows: Count
    mean_score: Probability
    observed: Probability


class CalibrationCheck(StrictModel):
    """Whether the scores are calibrated on the reference (labelled) data.

    `ece`: expected calibration error over equal-mass bins (binary: of P(positive); multiclass:
    of the top-class probability); `pvalue`: how likely an ECE this large is from perfectly
    calibrated scores on this many rows (consistency resampling). Calibrated means both the
    error is within `max_error` and it is not significant at `alpha`.
    """

    reference_rows: Count
    ece: Probability
    max_error: Probability
    pvalue: Probability
    alpha: Probability
    bins: list[ReliabilityBin]
    calibrated: bool
    reasons: list[str] = []


class LabelFreeMetric(StrEnum):
    ACCURACY = "accuracy"
    PRECISION = "precision"
    RECALL = "recall"
    F1 = "f1"


class EstimatedMetric(StrictModel):
    """An expected metric from predicted probabilities, with an interval for the realized
    value that covers both label sampling and the calibration error measured on the reference.
    `reference` is the same metric realized on the reference rows."""

    metric: LabelFreeMetric
    value: Probability
    ci_low: Probability
    ci_high: Probability
    confidence: Annotated[float, Field(gt=0, lt=1)]
    reference: Probability | None = None


class LabelFreeEstimate(StrictModel):
    """Confidence-based performance estimation (CBPE) on predictions without labels. Usable only
    when the scores were shown calibrated on the reference; the estimate is kept either way so
    people can see what it would have said."""

    rows: Count
    classes: Annotated[int, Field(ge=2)]
    calibration: CalibrationCheck
    estimates: list[EstimatedMetric]

    @property
    def usable(self) -> bool:
        return self.calibration.calibrated

    def estimate(self, metric: LabelFreeMetric) -> EstimatedMetric | None:
        return next((e for e in self.estimates if e.metric == metric), None)


class PerformanceRows(StrictModel):
    """What the join of captured answers with their feedback found in a window."""

    # Labels received in the window (the latest per request id), usable or not.
    labels: Count = 0
    # Labels joined with a usable answer of the monitored variants: the rows measured.
    labelled: Count = 0
    # Labels whose request id no capture file of the window (and its lookback) holds.
    unmatched: Count = 0
    # Labels that cannot be compared with a prediction (wrong type, not a class, not finite).
    invalid: Count = 0
    # Labels of answers that failed (status >= 500, no prediction).
    failed: Count = 0
    # Labels of answers by other versions or variants than the monitored ones (or of requests
    # answered only live when the shadow's are monitored, and the reverse).
    other_variants: Count = 0
    # Labelled rows left out beyond the reader's size bound (the oldest).
    dropped: Count = 0
    # Capture files skipped (unreadable, or not in the capture layout).
    skipped_files: Count = 0
    problems: Annotated[list[str], Field(max_length=MAX_PROBLEMS)] = []

    @property
    def bad(self) -> int:
        return self.unmatched + self.invalid


class PerformancePolicy(StrictModel):
    """How a model's realized quality is watched (one per model spec)."""

    enabled: bool = True
    # Metrics to watch; empty: the spec's evaluation metrics.
    metrics: list[Metric] = []
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    # A degradation smaller than this (relative to the reference) is not reported.
    min_degradation: Annotated[float, Field(ge=0, lt=1)] = 0.02
    # Relative degradation, at the conservative end of the interval, for medium/high/critical.
    severity_cut_points: tuple[float, float, float] = (0.03, 0.10, 0.30)
    # The change detector: its false-alarm probability per check (over the check's stream).
    false_alarm_rate: Annotated[float, Field(gt=0, lt=1)] = 0.01
    # Low volume: a window waits for min_rows labels, up to max_window_age; then it is checked
    # with what it has if that is at least min_rows_at_max_age, else reported as too small.
    min_rows: Annotated[int, Field(ge=10)] = 500
    max_window_age: Duration = timedelta(days=7)
    min_rows_at_max_age: Annotated[int, Field(ge=1)] = 50
    # Label-free estimates: the calibration they need, and the highest severity they can raise
    # (an estimate alone never blocks automation).
    max_calibration_error: Annotated[float, Field(gt=0, lt=1)] = 0.05
    label_free_max_severity: Severity = Severity.HIGH
    # Bad feedback (unmatched or invalid labels) above this share of the window's labels is a
    # data-quality problem: nothing is triggered on it.
    max_bad_label_share: Probability = 0.1
    # The first window of a monitor reaches back this far; later windows start where the last
    # check ended (labels are counted once). The detector reads a longer stretch, the last
    # `detection_window` of the champion's labelled traffic, so a change near a window's start
    # has data before it; a change it found before is not reported again.
    window: Duration = timedelta(hours=24)
    detection_window: Duration = timedelta(days=7)
    # The most labelled rows a check reads (the newest), and the most bootstrap resamples of
    # an interval (fewer on large windows: rows x resamples stays bounded).
    max_rows: Annotated[int, Field(ge=100, le=2_000_000)] = 200_000
    bootstrap_samples: Annotated[int, Field(ge=50, le=5000)] = 1000

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        medium, high, critical = self.severity_cut_points
        if not 0 <= medium < high < critical:
            raise ValueError("severity_cut_points must be increasing: medium < high < critical")
        if self.min_rows_at_max_age > self.min_rows:
            raise ValueError("min_rows_at_max_age cannot exceed min_rows")
        if self.max_window_age <= timedelta(0):
            raise ValueError("max_window_age must be positive")
        if self.window <= timedelta(0) or self.detection_window < self.window:
            raise ValueError("window must be positive and detection_window at least window")
        return self

    def watched(self, task: Task, evaluation: list[Metric]) -> list[Metric]:
        """The metrics a check judges: the policy's, else accuracy (classifiers) and the spec's
        evaluation metrics."""
        if self.metrics:
            return list(dict.fromkeys(self.metrics))
        first = [Metric.ACCURACY] if task is Task.CLASSIFICATION else []
        return list(dict.fromkeys([*first, *evaluation]))


class PerformanceReport(StrictModel):
    """The numbers of one performance check (computed by an activity, judged by the rules)."""

    model: str
    check_id: str
    checked_at: AwareDatetime
    window_start: AwareDatetime
    window_end: AwareDatetime
    task: Task
    # The monitored champion version, and where its reference quality comes from.
    version: str | None = None
    reference_source: str | None = None
    rows: PerformanceRows
    # The whole window; and, when the detector found a degradation, the stretches before and
    # since its latest change (the data the next model should learn from starts there).
    quality: list[MetricQuality] = []
    before_change: list[MetricQuality] = []
    since_change: list[MetricQuality] = []
    detector: DetectorState | None = None
    # Predictions of the window still without labels, estimated from their scores.
    label_free: LabelFreeEstimate | None = None
    # The stretch the detector read (labels received since then, the champion's answers).
    detection_start: AwareDatetime | None = None
    # The window's per-prediction loss (the detector's kind, unscaled) summed over its
    # labelled answers, its sum of squares, and the answers served in the window: what the
    # coordinator's adaptive policy learns from.
    loss: LossKind | None = None
    loss_sum: Annotated[float, Field(ge=0)] = 0.0
    loss_sq_sum: Annotated[float, Field(ge=0)] = 0.0
    served: Count = 0
    notes: list[str] = []

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.window_start > self.window_end:
            raise ValueError("window_start is after window_end")
        measured = (*self.quality, *self.before_change, *self.since_change)
        wrong = sorted({q.metric.value for q in measured if q.metric.task is not self.task})
        if wrong:
            raise ValueError(f"metrics {wrong} do not apply to a {self.task.value} model")
        return self


class VolumeDecision(StrEnum):
    """What a check does with the labels its window has gathered so far."""

    # Enough labels: check, and start a new window.
    CHECK = "check"
    # Too few labels and the window is young: keep gathering (the window keeps its start).
    WAIT = "wait"
    # Too few labels but the window reached its maximum age: check with what it has.
    CHECK_AVAILABLE = "check_available"
    # The window reached its maximum age with almost nothing: say so, start a new window.
    TOO_FEW = "too_few"


class PerformanceStatus(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    # The point estimate is materially worse but the interval still reaches the reference.
    INCONCLUSIVE = "inconclusive"
    # Quality measured, but no reference to judge it against and no change detected.
    NO_REFERENCE = "no_reference"
    DATA_QUALITY = "data_quality"
    INSUFFICIENT_DATA = "insufficient_data"


class MetricJudgement(StrictModel):
    """One comparison the verdict made: `degradation` is relative to the baseline it compared
    with (positive = worse), `conservative` the same at the interval's better end."""

    basis: Basis
    metric: str
    current: float
    ci_low: float
    ci_high: float
    baseline: float
    degradation: float
    conservative: float
    rows: Count
    status: PerformanceStatus


class PerformanceVerdict(StrictModel):
    status: PerformanceStatus
    severity: Severity = Severity.LOW
    # The degradation the severity comes from (relative, conservative end); 0 when none.
    score: Annotated[float, Field(ge=0)] = 0.0
    # The comparison behind the status (the worst one), and every comparison made.
    headline: MetricJudgement | None = None
    judgements: list[MetricJudgement] = []
    summary: str = ""
