"""The `check_performance` activity: how well the champion does on the labelled traffic it
answered, as a `PerformanceReport` (the DriftMonitor judges it with the pure
`workflows.drift.performance_rules.judge_check`).

Steps: read the registered spec → make the endpoint write its buffered capture → the champion
and its reference quality (the evaluation of the loop that promoted it: its `recent` dataset,
else its holdout) → the champion's labelled stream over the last `detection_window`
(`activities.drift.performance_window`, answers joined with their latest label, bounded) → the
realized quality of the current window (labels received since `window_start`) with intervals →
ADWIN over the whole stream's per-prediction losses, and the quality before and since its latest
change when that change made things worse → the label-free estimate of the window's answers
still without a label (binary classifiers with captured scores; calibration checked on the
champion's holdout).

Where data come from is behind three small functions (`labelled_stream`, `unlabelled_answers`,
`reference_outcome`), so a cloud capture format plugs in there. Bad captured data is counted in
the report (`rows`), never raised; a metric the spec asks for that the captured answers cannot
produce (log loss without scores, a regression metric of a classifier) fails the check with a
clear, non-retryable error, and nothing is sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.drift.change_detection import detect_changes
from activities.drift.label_free import CalibrationUnknown, estimate_performance
from activities.drift.performance_metrics import (
    PROBABILITY_METRICS,
    MetricUnavailable,
    check_metrics,
    default_loss,
    has_probabilities,
    per_prediction_loss,
    realized_quality,
    reference_quality,
    subset,
    window_outcome,
)
from activities.drift.performance_window import (
    Answers,
    LabelledWindow,
    read_answers,
    read_labelled_window,
)
from activities.drift.window import flush_notes, sync_notes
from activities.local.capture import capture_dir
from activities.loop.audit import AuditStore
from activities.loop.data_window import loop_data_dir
from activities.loop.evaluation import ClassifierOutcome, predict, read_labelled_set, shared_classes
from activities.ports import CaptureSource, ModelRegistry
from activities.specs import SpecStore, registered_spec
from workflows.common.errors import ErrorType
from workflows.common.names import ActivityName
from workflows.drift.models import PerformanceCheckInput
from workflows.drift.performance_models import (
    LossKind,
    MetricQuality,
    PerformancePolicy,
    PerformanceReport,
)
from workflows.loop.models import ModelVersion
from workflows.loop.rules import HOLDOUT, RECENT
from workflows.spec.models import Metric, ModelSpec, Task

# Rows x resamples of one bootstrap interval, at most (a 200,000-row window gets 100 resamples).
MAX_BOOTSTRAP_CELLS = 20_000_000
MIN_BOOTSTRAP_SAMPLES = 100
# The regression loss is divided by this quantile of the stream's own losses before detection.
REGRESSION_LOSS_QUANTILE = 0.99


def bootstrap_samples(rows: int, policy: PerformancePolicy) -> int:
    """The policy's resamples, fewer on large windows (cost grows with rows x resamples)."""
    if rows <= 0:
        return policy.bootstrap_samples
    return max(MIN_BOOTSTRAP_SAMPLES, min(policy.bootstrap_samples, MAX_BOOTSTRAP_CELLS // rows))


# ---- where the data come from (the local capture layout; a cloud format plugs in here) -------


def labelled_stream(
    home: Path, spec: ModelSpec, version: str, start: datetime, end: datetime, max_rows: int
) -> LabelledWindow:
    """The champion's live answers whose label arrived in [start, end), request time order."""
    return read_labelled_window(
        capture_dir(home, spec), spec.task, start, end, versions=[version], max_rows=max_rows
    )


def unlabelled_answers(
    home: Path, spec: ModelSpec, version: str, start: datetime, end: datetime, labelled: Any
) -> Answers:
    """The champion's answers captured in [start, end) whose label has not arrived."""
    answers = read_answers(capture_dir(home, spec), start, end, versions=[version])
    keep = ~np.isin(answers.request_id, labelled)
    return Answers(
        request_id=answers.request_id[keep],
        captured_at=answers.captured_at[keep],
        prediction=answers.prediction[keep],
        score=answers.score[keep],
    )


def answers_served(
    home: Path, spec: ModelSpec, version: str, start: datetime, end: datetime
) -> int:
    """How many answers the champion served in [start, end), labelled or not (the traffic
    volume the adaptive policy weighs a loss rate by)."""
    answers = read_answers(capture_dir(home, spec), start, end, versions=[version], max_rows=10**8)
    return answers.size


def reference_outcome(
    home: Path, spec: ModelSpec, champion: ModelVersion, load: Callable[[ModelVersion], Any]
) -> ClassifierOutcome | None:
    """The champion's own predictions on the holdout of the loop that trained it (labelled,
    never trained on): where its calibration is checked. None without such a holdout."""
    if champion.loop_id is None:
        return None
    holdout = loop_data_dir(home, spec.name, champion.loop_id) / "holdout.parquet"
    if not holdout.exists():
        return None
    data = read_labelled_set(HOLDOUT, holdout, spec)
    model = load(champion)
    outcome = predict(model, data, shared_classes([model]), "champion")
    assert isinstance(outcome, ClassifierOutcome)
    return outcome


def promotion_reference(
    home: Path, spec: ModelSpec, champion: ModelVersion
) -> tuple[dict[Metric, float], str | None]:
    """The champion's quality when it was promoted: its loop's evaluation on the most recent
    labelled data (`recent`), else on its holdout; and where that comes from."""
    if champion.loop_id is None:
        return {}, None
    record = AuditStore(home).read(spec.name, champion.loop_id)
    if record is None or record.evaluation is None:
        return {}, None
    for dataset in (RECENT, HOLDOUT):
        if dataset in record.evaluation.candidate:
            source = f"{champion.loop_id} evaluation ({dataset})"
            return reference_quality(record.evaluation, dataset), source
    return {}, None


# ---- the check -----------------------------------------------------------------------------


def _metrics(spec: ModelSpec, outcome: Any, notes: list[str]) -> tuple[list[Metric], list[Metric]]:
    """The metrics to measure: (watched ones, every one measured). The spec's own choice must
    be producible (MetricUnavailable otherwise); defaults the captured answers cannot produce
    are left out with a note."""
    policy = spec.performance
    watched = policy.watched(spec.task, spec.loop.evaluation.metrics)
    if policy.metrics:
        check_metrics(outcome, watched)
        return watched, watched
    available = [
        metric
        for metric in watched
        if metric.task is spec.task
        and (metric not in PROBABILITY_METRICS or has_probabilities(outcome))
    ]
    if dropped := [m.value for m in watched if m not in available]:
        notes.append(
            f"not measured: {', '.join(dropped)} (the captured answers have no class "
            "probabilities; binary classifiers' scores are captured)"
        )
    return available, available


def _quality(
    outcome: Any,
    metrics: list[Metric],
    reference: dict[Metric, float],
    policy: PerformancePolicy,
    seed: int,
) -> list[MetricQuality]:
    n = len(outcome.truth)
    return realized_quality(
        outcome,
        metrics,
        reference=reference,
        confidence=policy.confidence,
        bootstrap_samples=bootstrap_samples(n, policy),
        seed=seed,
    )


def _detector_losses(outcome: Any, task: Task) -> tuple[Any, LossKind, float | None]:
    kind = default_loss(task)
    losses = per_prediction_loss(outcome, kind)
    if kind is LossKind.ZERO_ONE or not losses.size:
        return losses, kind, None
    # Absolute errors are unbounded: scaled by a high quantile of the stream's own, so one
    # huge error counts as one error.
    scale = float(np.quantile(losses, REGRESSION_LOSS_QUANTILE))
    return losses, kind, scale if math.isfinite(scale) and scale > 0 else 1.0


def check_performance(
    home: Path,
    spec: ModelSpec,
    registry: ModelRegistry,
    request: PerformanceCheckInput,
    *,
    flush: Callable[[str], None] | None = None,
    heartbeat: Callable[[str], None] = lambda _: None,
    seed: int = 0,
    capture: CaptureSource | None = None,
) -> PerformanceReport:
    policy = spec.performance
    notes = flush_notes(flush, spec.loop.deployment.endpoint_url)
    end = request.window_end.astimezone(UTC)
    window_start = min(request.window_start.astimezone(UTC), end)
    detection_start = min(window_start, end - policy.detection_window)
    base = {
        "model": spec.name,
        "check_id": request.check_id,
        "checked_at": request.window_end,
        "window_start": window_start,
        "window_end": end,
        "task": spec.task,
        "detection_start": detection_start,
    }
    if capture is not None:
        # A cloud endpoint's answers and ground truth (SageMaker Data Capture and Model
        # Monitor's ground truth, Vertex's BigQuery log) into the capture layout read below.
        heartbeat("cloud capture")
        notes += sync_notes(capture, spec, detection_start, end, heartbeat)
    heartbeat("champion")
    champion = registry.champion(spec.name)
    if champion is None:
        return PerformanceReport(
            **base,
            rows={},
            notes=[*notes, "no champion yet: nothing serves, nothing to measure"],
        )
    reference, source = promotion_reference(home, spec, champion)
    if not reference:
        notes.append(f"no reference quality recorded for v{champion.version}")

    heartbeat("labelled stream")
    stream = labelled_stream(home, spec, champion.version, detection_start, end, policy.max_rows)
    in_window = stream.received_at >= np.datetime64(window_start.replace(tzinfo=None), "us")
    stream_outcome = window_outcome(stream, spec.task)
    current = subset(stream_outcome, 0, 0)
    if in_window.any():
        # The window's rows: labels received since its start (a suffix by label time, not
        # necessarily by request time).
        window = LabelledWindow(
            request_id=stream.request_id[in_window],
            captured_at=stream.captured_at[in_window],
            received_at=stream.received_at[in_window],
            variant=stream.variant[in_window],
            version=stream.version[in_window],
            prediction=stream.prediction[in_window],
            score=stream.score[in_window],
            label=stream.label[in_window],
        )
        current = window_outcome(window, spec.task, classes=_classes(stream_outcome))
    rows = stream.rows.model_copy(update={"labelled": int(in_window.sum())})
    try:
        watched, _ = _metrics(spec, current if in_window.any() else stream_outcome, notes)
    except MetricUnavailable as error:
        raise ApplicationError(
            f"the model spec's performance.metrics cannot be measured on captured traffic: {error}",
            type=ErrorType.INVALID_MODEL_SPEC,
            non_retryable=True,
        ) from error

    heartbeat("quality")
    quality = _quality(current, watched, reference, policy, seed) if in_window.any() else []
    window_losses = (
        per_prediction_loss(current, default_loss(spec.task)) if in_window.any() else None
    )
    detector = before = since = None
    if stream.size:
        heartbeat("detector")
        losses, kind, scale = _detector_losses(stream_outcome, spec.task)
        detector = detect_changes(
            losses,
            kind=kind,
            scale=scale,
            times=stream.captured_at,
            false_alarm_rate=policy.false_alarm_rate,
        )
        if detector.degraded and detector.last_change is not None:
            changes = detector.changes
            change = changes[-1].index
            previous = changes[-2].index if len(changes) > 1 else 0
            before = _quality(
                subset(stream_outcome, previous, change), watched, reference, policy, seed
            )
            since = _quality(subset(stream_outcome, change), watched, reference, policy, seed)

    heartbeat("served")
    served = answers_served(home, spec, champion.version, window_start, end)
    heartbeat("label-free")
    label_free = None
    if spec.task is Task.CLASSIFICATION:
        try:
            label_free = _label_free(
                home, spec, champion, registry, window_start, end, stream, policy, seed
            )
        except (CalibrationUnknown, ValueError, OSError, ApplicationError) as error:
            notes.append(f"no label-free estimate: {error}")
    return PerformanceReport(
        **base,
        version=champion.version,
        reference_source=source,
        rows=rows,
        quality=quality,
        before_change=before or [],
        since_change=since or [],
        detector=detector,
        label_free=label_free,
        loss=default_loss(spec.task),
        loss_sum=float(window_losses.sum()) if window_losses is not None else 0.0,
        loss_sq_sum=float((window_losses**2).sum()) if window_losses is not None else 0.0,
        served=max(served, rows.labelled),
        notes=notes,
    )


def _classes(outcome: Any) -> Any:
    return outcome.classes if isinstance(outcome, ClassifierOutcome) else None


def _label_free(
    home: Path,
    spec: ModelSpec,
    champion: ModelVersion,
    registry: ModelRegistry,
    start: datetime,
    end: datetime,
    stream: LabelledWindow,
    policy: PerformancePolicy,
    seed: int,
) -> Any:
    """The estimate over the window's answers still without a label (None: nothing to
    estimate, or no probabilities captured)."""
    answers = unlabelled_answers(home, spec, champion.version, start, end, stream.request_id)
    scored = np.isfinite(answers.score)
    if not scored.any():
        return None
    reference = reference_outcome(home, spec, champion, registry.load)
    if reference is None or not reference.binary:
        raise CalibrationUnknown(
            "no binary reference with probabilities (the champion's loop holdout) to check "
            "calibration on"
        )
    positive = answers.score[scored]
    proba = np.column_stack([1.0 - positive, positive])
    return estimate_performance(
        reference,
        np.clip(proba, 0.0, 1.0),
        confidence=policy.confidence,
        max_calibration_error=policy.max_calibration_error,
        seed=seed,
    )


class PerformanceActivities:
    def __init__(
        self,
        home: Path,
        specs: SpecStore,
        registry: ModelRegistry,
        flush: Callable[[str], None] | None = None,
        capture: Callable[[ModelSpec], CaptureSource | None] = lambda _: None,
    ) -> None:
        self.home = home
        self.specs = specs
        self.registry = registry
        self.flush = flush
        # A cloud model's capture is read into the capture layout first (as the drift check).
        self.capture = capture

    @activity.defn(name=ActivityName.CHECK_PERFORMANCE)
    def check(self, request: PerformanceCheckInput) -> PerformanceReport:
        spec = registered_spec(self.specs, request.model)
        report = check_performance(
            self.home,
            spec,
            self.registry,
            request,
            flush=self.flush,
            heartbeat=activity.heartbeat,
            capture=self.capture(spec),
        )
        activity.logger.info(
            "performance check %s: v%s, %d labelled rows, %s",
            report.check_id,
            report.version,
            report.rows.labelled,
            ", ".join(f"{q.metric.value} {q.value:.4g}" for q in report.quality) or "no quality",
        )
        return report
