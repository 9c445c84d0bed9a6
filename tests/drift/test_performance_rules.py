"""Performance decisions (workflows/drift/performance_rules.py): pure functions over hand-built
reports, property-tested where a claim is general (low-volume windows always get checked)."""

from __future__ import annotations

import ast
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import workflows.drift.performance_models
import workflows.drift.performance_rules
from workflows.coordinator.triggers import Severity
from workflows.drift.performance_models import (
    Basis,
    CalibrationCheck,
    ChangePoint,
    DetectorState,
    EstimatedMetric,
    IntervalMethod,
    LabelFreeEstimate,
    LabelFreeMetric,
    LossKind,
    MetricQuality,
    PerformancePolicy,
    PerformanceReport,
    PerformanceRows,
    PerformanceStatus,
    VolumeDecision,
)
from workflows.drift.performance_rules import (
    assess_performance,
    judge,
    next_window_start,
    performance_signal,
    volume_decision,
)
from workflows.spec.models import Metric, Task

POLICY = PerformancePolicy()
START = datetime(2026, 4, 1, tzinfo=UTC)
END = START + timedelta(days=1)


def quality(
    metric: Metric, value: float, low: float, high: float, reference: float | None, rows: int = 800
) -> MetricQuality:
    return MetricQuality(
        metric=metric,
        value=value,
        ci_low=low,
        ci_high=high,
        confidence=0.95,
        method=IntervalMethod.WILSON,
        rows=rows,
        reference=reference,
    )


def report(**fields: Any) -> PerformanceReport:
    base: dict[str, Any] = {
        "model": "credit",
        "check_id": "perf-1",
        "checked_at": END,
        "window_start": START,
        "window_end": END,
        "task": Task.CLASSIFICATION,
        "version": "3",
        "rows": PerformanceRows(labels=800, labelled=800),
    }
    return PerformanceReport(**(base | fields))


def detector(mean_before: float, mean_after: float, index: int = 600) -> DetectorState:
    return DetectorState(
        loss=LossKind.ZERO_ONE,
        false_alarm_rate=0.01,
        horizon=800,
        delta=0.01 / 25,
        clock=32,
        observations=800,
        mean=0.1,
        changes=[
            ChangePoint(
                index=index,
                detected_index=index + 60,
                at=START + timedelta(hours=18),
                detected_at=START + timedelta(hours=19),
                mean_before=mean_before,
                mean_after=mean_after,
            )
        ],
    )


def label_free(value: float, low: float, high: float, calibrated: bool = True) -> LabelFreeEstimate:
    return LabelFreeEstimate(
        rows=2000,
        classes=2,
        calibration=CalibrationCheck(
            reference_rows=5000,
            ece=0.01 if calibrated else 0.12,
            max_error=0.05,
            pvalue=0.4 if calibrated else 0.001,
            alpha=0.01,
            bins=[],
            calibrated=calibrated,
        ),
        estimates=[
            EstimatedMetric(
                metric=LabelFreeMetric.ACCURACY,
                value=value,
                ci_low=low,
                ci_high=high,
                confidence=0.95,
                reference=0.93,
            )
        ],
    )


# ---- volume --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "age_days", "decision"),
    [
        (500, 0.1, VolumeDecision.CHECK),
        (499, 6.9, VolumeDecision.WAIT),
        (499, 7.0, VolumeDecision.CHECK_AVAILABLE),
        (50, 8.0, VolumeDecision.CHECK_AVAILABLE),
        (49, 7.0, VolumeDecision.TOO_FEW),
        (0, 30.0, VolumeDecision.TOO_FEW),
    ],
)
def test_volume_decisions(rows: int, age_days: float, decision: VolumeDecision) -> None:
    now = START + timedelta(days=age_days)
    assert volume_decision(rows, START, now, POLICY) is decision
    kept = next_window_start(decision, START, now)
    assert kept == (START if decision is VolumeDecision.WAIT else now)


def simulate(
    per_hour: float, hours: int, policy: PerformancePolicy
) -> list[tuple[int, VolumeDecision]]:
    """Hourly checks of a model receiving `per_hour` labels an hour: (hour, decision) of every
    check that did not wait."""
    window_start, gathered = START, 0.0
    done: list[tuple[int, VolumeDecision]] = []
    for hour in range(1, hours + 1):
        now = START + timedelta(hours=hour)
        gathered += per_hour
        decision = volume_decision(int(gathered), window_start, now, policy)
        if decision is not VolumeDecision.WAIT:
            done.append((hour, decision))
            gathered = 0.0
        window_start = next_window_start(decision, window_start, now)
    return done


def test_a_model_with_180_labels_a_day_is_checked_every_three_days() -> None:
    done = simulate(180 / 24, 30 * 24, POLICY)
    assert {decision for _, decision in done} == {VolumeDecision.CHECK}
    hours = [hour for hour, _ in done]
    gaps = [b - a for a, b in zip([0, *hours], hours, strict=False)]
    # 500 labels at 7.5 an hour: the 67th hour.
    assert set(gaps) == {67} and len(done) == 10


@settings(max_examples=60, deadline=None)
@given(per_day=st.floats(min_value=0.0, max_value=2000.0), days=st.integers(10, 40))
def test_every_window_is_closed_within_its_maximum_age(per_day: float, days: int) -> None:
    policy = PerformancePolicy(max_window_age=timedelta(days=3))
    done = simulate(per_day / 24, days * 24, policy)
    hours = [0, *(hour for hour, _ in done)]
    # No window waits past its maximum age (hourly checks: within the hour).
    assert max(b - a for a, b in zip(hours, [*hours[1:], days * 24], strict=False)) <= 3 * 24
    # "Too few" only when even the maximum age gathers fewer than the floor.
    too_few = [decision for _, decision in done if decision is VolumeDecision.TOO_FEW]
    if per_day * 3 >= policy.min_rows_at_max_age + per_day / 24:
        assert not too_few
    if per_day * 3 < policy.min_rows_at_max_age - 1:
        assert too_few and len(too_few) == len(done)


# ---- comparisons ---------------------------------------------------------------------------


def test_judge_orients_every_metric_and_needs_both_size_and_significance() -> None:
    worse = judge(Basis.REALIZED, "accuracy", True, 0.80, 0.78, 0.82, 0.90, 1000, 0.02)
    assert worse.status is PerformanceStatus.DEGRADED
    assert worse.degradation == pytest.approx(0.1 / 0.9)
    assert worse.conservative == pytest.approx(0.08 / 0.9)
    log_loss = judge(Basis.REALIZED, "log_loss", False, 0.5, 0.45, 0.55, 0.3, 1000, 0.02)
    assert log_loss.status is PerformanceStatus.DEGRADED
    assert log_loss.conservative == pytest.approx(0.15 / 0.3)
    # Large but not significant: the interval reaches the baseline.
    wide = judge(Basis.REALIZED, "accuracy", True, 0.80, 0.60, 0.95, 0.90, 20, 0.02)
    assert wide.status is PerformanceStatus.INCONCLUSIVE
    # Significant but smaller than the tolerance.
    small = judge(Basis.REALIZED, "accuracy", True, 0.89, 0.888, 0.892, 0.90, 10**6, 0.02)
    assert small.status is PerformanceStatus.OK
    better = judge(Basis.REALIZED, "rmse", False, 1.0, 0.9, 1.1, 2.0, 100, 0.02)
    assert better.status is PerformanceStatus.OK and better.degradation < 0
    # A zero baseline compares in absolute terms.
    zero = judge(Basis.REALIZED, "r2", True, -0.2, -0.3, -0.1, 0.0, 100, 0.02)
    assert zero.degradation == pytest.approx(0.2)


# ---- the verdict ---------------------------------------------------------------------------


def test_a_realized_degradation_with_its_severity_and_signal() -> None:
    measured = report(
        quality=[
            quality(Metric.ACCURACY, 0.70, 0.68, 0.72, 0.90),
            quality(Metric.ROC_AUC, 0.895, 0.88, 0.91, 0.90),
        ]
    )
    verdict = assess_performance(measured, POLICY)
    assert verdict.status is PerformanceStatus.DEGRADED
    # (0.90 - 0.72) / 0.90 = 0.2 at the interval's better end: high (0.10 <= 0.2 < 0.30).
    assert verdict.severity is Severity.HIGH and verdict.score == pytest.approx(0.2)
    assert verdict.headline is not None and verdict.headline.metric == "accuracy"
    assert [j.status for j in verdict.judgements] == [
        PerformanceStatus.DEGRADED,
        PerformanceStatus.OK,
    ]
    assert verdict.summary.startswith("high degradation: accuracy 0.7 [0.68, 0.72] vs 0.9")
    signal = performance_signal(measured, verdict)
    assert signal is not None
    assert (signal.metric, signal.reference, signal.current) == ("accuracy", 0.90, 0.70)
    assert (signal.ci_low, signal.ci_high, signal.rows) == (0.68, 0.72, 800)
    assert (signal.basis, signal.version, signal.change_at) == (Basis.REALIZED, "3", None)
    assert (signal.window_start, signal.window_end) == (START, END)


@pytest.mark.parametrize(
    ("current", "severity"),
    [(0.885, Severity.LOW), (0.86, Severity.MEDIUM), (0.60, Severity.CRITICAL)],
)
def test_severity_follows_the_cut_points(current: float, severity: Severity) -> None:
    measured = report(
        quality=[quality(Metric.ACCURACY, current, current - 0.002, current + 0.002, 0.90)]
    )
    assert assess_performance(measured, POLICY).severity is severity


def test_low_volume_gives_an_inconclusive_verdict_not_an_alarm() -> None:
    measured = report(quality=[quality(Metric.ACCURACY, 0.8, 0.62, 0.91, 0.9, rows=25)])
    verdict = assess_performance(measured, POLICY)
    assert verdict.status is PerformanceStatus.INCONCLUSIVE
    assert performance_signal(measured, verdict) is None


def test_the_stretch_since_a_change_decides_when_the_window_average_hides_it() -> None:
    measured = report(
        quality=[quality(Metric.ACCURACY, 0.885, 0.862, 0.905, 0.90)],
        detector=detector(0.08, 0.30),
        before_change=[quality(Metric.ACCURACY, 0.92, 0.90, 0.94, None, rows=600)],
        since_change=[quality(Metric.ACCURACY, 0.70, 0.63, 0.76, 0.90, rows=200)],
    )
    verdict = assess_performance(measured, POLICY)
    realized, change = verdict.judgements
    assert realized.status is PerformanceStatus.OK
    assert change.basis is Basis.CHANGE and change.status is PerformanceStatus.DEGRADED
    assert verdict.headline == change and verdict.severity is Severity.HIGH
    signal = performance_signal(measured, verdict)
    assert signal is not None and signal.change_at == START + timedelta(hours=18)
    assert (signal.mean_loss_before, signal.mean_loss_after) == (0.08, 0.30)
    assert signal.detected_at == START + timedelta(hours=19)


def test_without_a_reference_the_stretch_before_the_change_is_the_baseline() -> None:
    measured = report(
        quality=[quality(Metric.ACCURACY, 0.85, 0.83, 0.87, None)],
        detector=detector(0.05, 0.35),
        before_change=[quality(Metric.ACCURACY, 0.95, 0.93, 0.96, None, rows=600)],
        since_change=[quality(Metric.ACCURACY, 0.65, 0.58, 0.71, None, rows=200)],
    )
    verdict = assess_performance(measured, POLICY)
    assert verdict.status is PerformanceStatus.DEGRADED
    assert verdict.headline is not None and verdict.headline.baseline == 0.95
    # The same numbers without a detected change: nothing to compare with.
    quiet = report(quality=[quality(Metric.ACCURACY, 0.85, 0.83, 0.87, None)])
    assert assess_performance(quiet, POLICY).status is PerformanceStatus.NO_REFERENCE


def test_an_improvement_found_by_the_detector_is_no_alarm() -> None:
    measured = report(
        quality=[quality(Metric.ACCURACY, 0.90, 0.88, 0.92, 0.90)],
        detector=detector(0.30, 0.08),
        before_change=[quality(Metric.ACCURACY, 0.70, 0.66, 0.74, None, rows=600)],
        since_change=[quality(Metric.ACCURACY, 0.92, 0.88, 0.95, 0.90, rows=200)],
    )
    verdict = assess_performance(measured, POLICY)
    assert verdict.status is PerformanceStatus.OK
    assert [j.basis for j in verdict.judgements] == [Basis.REALIZED]


def test_a_label_free_warning_is_capped_and_needs_calibrated_scores() -> None:
    waiting = report(
        rows=PerformanceRows(),
        quality=[],
        label_free=label_free(0.55, 0.52, 0.58),
    )
    verdict = assess_performance(waiting, POLICY)
    assert verdict.status is PerformanceStatus.DEGRADED
    # (0.93 - 0.58) / 0.93 = 0.38: critical by the cut points, capped at high.
    assert verdict.score == pytest.approx(0.35 / 0.93)
    assert verdict.severity is Severity.HIGH
    signal = performance_signal(waiting, verdict)
    assert signal is not None and signal.basis is Basis.LABEL_FREE
    assert signal.estimated_accuracy == 0.55 and signal.reference == 0.93
    # Uncalibrated scores: the estimate is shown, not judged.
    flagged = report(rows=PerformanceRows(), label_free=label_free(0.55, 0.52, 0.58, False))
    assert assess_performance(flagged, POLICY).status is PerformanceStatus.INSUFFICIENT_DATA


def test_bad_feedback_is_a_data_quality_problem_and_triggers_nothing() -> None:
    rows = PerformanceRows(
        labels=1000,
        labelled=800,
        unmatched=150,
        invalid=50,
        problems=["150 label(s) for request ids no capture file answered ..."],
    )
    measured = report(rows=rows, quality=[quality(Metric.ACCURACY, 0.5, 0.46, 0.54, 0.9)])
    verdict = assess_performance(measured, POLICY)
    assert verdict.status is PerformanceStatus.DATA_QUALITY
    assert "200 of 1000 labels unusable (150 unmatched, 50 invalid)" in verdict.summary
    assert performance_signal(measured, verdict) is None
    # Within the allowed share: judged as usual.
    fine = rows.model_copy(update={"unmatched": 50, "invalid": 0})
    assert assess_performance(measured.model_copy(update={"rows": fine}), POLICY).status is (
        PerformanceStatus.DEGRADED
    )


def test_the_policy_chooses_the_watched_metrics() -> None:
    measured = report(
        quality=[
            quality(Metric.ACCURACY, 0.70, 0.68, 0.72, 0.90),
            quality(Metric.LOG_LOSS, 0.30, 0.28, 0.32, 0.30),
        ]
    )
    watched = PerformancePolicy(metrics=[Metric.LOG_LOSS])
    verdict = assess_performance(measured, watched)
    assert verdict.status is PerformanceStatus.OK
    assert [j.metric for j in verdict.judgements] == ["log_loss"]


def test_nothing_measured_is_insufficient_data() -> None:
    verdict = assess_performance(report(rows=PerformanceRows()), POLICY)
    assert verdict.status is PerformanceStatus.INSUFFICIENT_DATA


# ---- the messages --------------------------------------------------------------------------


def test_reports_refuse_inconsistent_numbers() -> None:
    with pytest.raises(ValidationError, match="do not apply to a regression model"):
        report(task=Task.REGRESSION, quality=[quality(Metric.ACCURACY, 0.7, 0.6, 0.8, None)])
    with pytest.raises(ValidationError, match="outside its interval"):
        quality(Metric.ACCURACY, 0.9, 0.6, 0.8, None)
    with pytest.raises(ValidationError, match="window_start is after window_end"):
        report(window_start=END, window_end=START)
    with pytest.raises(ValidationError, match="severity_cut_points"):
        PerformancePolicy(severity_cut_points=(0.3, 0.1, 0.5))
    with pytest.raises(ValidationError, match="min_rows_at_max_age"):
        PerformancePolicy(min_rows=100, min_rows_at_max_age=200)
    # A round trip through JSON (the workflow's payload converter) keeps everything.
    measured = report(
        quality=[quality(Metric.ACCURACY, 0.7, 0.68, 0.72, 0.9)],
        detector=detector(0.1, 0.3),
        label_free=label_free(0.8, 0.77, 0.83),
    )
    again = PerformanceReport.model_validate_json(measured.model_dump_json())
    assert again == measured and again.detector is not None and again.detector.degraded


@pytest.mark.parametrize(
    "module", [workflows.drift.performance_rules, workflows.drift.performance_models]
)
def test_the_workflow_side_imports_no_numpy(module: Any) -> None:
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert all(
        name.split(".")[0] in {*sys.stdlib_module_names, "pydantic", "workflows"}
        for name in imported
        if name
    ), imported
