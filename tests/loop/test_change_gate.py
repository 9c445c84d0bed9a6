"""The gate of a loop that answers a change (pure rules): the improvement a degraded quality asks
for, the baseline-drift bound after a regime change, and the recent / replayed data on which no
candidate may be significantly worse."""

from __future__ import annotations

from typing import Any

import pytest

from starters.demo.synthetic import synthetic_spec
from tests.loop.test_guardrails import GOOD_REPORT, delta
from tests.support.loop_harness import manual_trigger
from workflows.coordinator.triggers import PerformanceSignal, Severity
from workflows.loop.models import EvaluationReport
from workflows.loop.rules import (
    BASELINE_DRIFT,
    HOLDOUT,
    PREDICTION_SHIFT,
    QUALITY_IMPROVEMENT,
    RECENT,
    REPLAY,
    GateContext,
    check_baseline_drift,
    check_improvement,
    gate_verdict,
    improvement_metric,
    live_regressions,
    regime_gap,
)
from workflows.spec.models import EvaluationPolicy, GuardrailPolicy, LoopPolicy, Metric, ModelSpec

# A candidate of the new concept against the degraded champion: far better on the new data
# (holdout of a window starting at the change, replayed traffic), far worse on the old baseline,
# predicting very differently.
CHANGED: dict[str, Any] = {
    "candidate": {
        "holdout": {"accuracy": 0.92},
        "recent": {"accuracy": 0.91},
        "replay": {"accuracy": 0.90},
        "baseline": {"accuracy": 0.49},
        "golden": {"accuracy": 0.48},
    },
    "champion": {
        "holdout": {"accuracy": 0.50},
        "recent": {"accuracy": 0.47},
        "replay": {"accuracy": 0.49},
        "baseline": {"accuracy": 0.95},
        "golden": {"accuracy": 0.95},
    },
    "rows": {"holdout": 400, "recent": 100, "replay": 900, "baseline": 5000, "golden": 1000},
    "deltas": [
        delta(Metric.ROC_AUC, 0.4, 0.35, 0.45),
        delta(Metric.LOG_LOSS, 1.2, 1.0, 1.4),
        delta(Metric.ACCURACY, 0.42, 0.36, 0.48),
        delta(Metric.ACCURACY, 0.44, 0.31, 0.55, dataset=RECENT),
        delta(Metric.ACCURACY, 0.41, 0.37, 0.45, dataset=REPLAY),
    ],
    "prediction_bins": [i / 10 for i in range(11)],
    "candidate_prediction_counts": [300, 10, 10, 10, 10, 10, 10, 10, 10, 20],
    "champion_prediction_counts": [10, 10, 10, 10, 10, 10, 10, 10, 10, 300],
    "errors_by_segment": {"north": 10, "south": 9, "east": 11},
}


def changed(**changes: Any) -> EvaluationReport:
    return EvaluationReport.model_validate(CHANGED | changes)


def spec() -> ModelSpec:
    return synthetic_spec("m").model_copy(
        update={"loop": LoopPolicy(evaluation=EvaluationPolicy(metrics=[Metric.ACCURACY]))}
    )


def test_the_improvement_is_judged_on_replayed_traffic_first() -> None:
    check = check_improvement(changed(), Metric.ACCURACY, 0.95, regime_change=True)
    assert check.name == QUALITY_IMPROVEMENT and check.passed
    assert check.numbers["ci_low"] == 0.37 and check.numbers["rows"] == 900
    assert "accuracy on the replay data (900 rows)" in check.detail
    # Too little replayed traffic: the holdout of a window that starts at the change, else
    # (no regime change) the recent slice.
    few = changed(rows=CHANGED["rows"] | {"replay": 20})
    assert (
        "on the holdout data"
        in check_improvement(few, Metric.ACCURACY, 0.95, regime_change=True).detail
    )
    assert "on the recent data" in check_improvement(few, Metric.ACCURACY, 0.95).detail


def test_not_worse_is_not_an_improvement() -> None:
    flat = changed(
        deltas=[
            delta(Metric.ACCURACY, 0.01, -0.03, 0.05, dataset=REPLAY),
            delta(Metric.ACCURACY, 0.02, -0.01, 0.05),
        ]
    )
    check = check_improvement(flat, Metric.ACCURACY, 0.95, regime_change=True)
    assert not check.passed and "not a significant improvement" in check.detail
    missing = check_improvement(changed(deltas=[]), Metric.ROC_AUC, 0.95)
    assert not missing.passed and "cannot be shown" in missing.detail
    first = check_improvement(changed(champion=None), Metric.ACCURACY, 0.95)
    assert first.passed and "No champion" in first.detail


def test_after_a_regime_change_the_baseline_allows_what_the_regimes_explain() -> None:
    report = changed()
    policy = GuardrailPolicy()
    plain = check_baseline_drift(report, policy)
    assert plain.name == BASELINE_DRIFT and not plain.passed
    # The champion falls 0.95 -> 0.49 between the regimes (replay); the candidate knows the
    # new one better by 0.90 - 0.49.
    gap = (0.95 - 0.49) + (0.90 - 0.49)
    assert regime_gap(report, "accuracy") == pytest.approx(gap)
    after = check_baseline_drift(report, policy, regime_change=True)
    assert after.passed and after.numbers["regime_allowance"] == pytest.approx(gap)
    assert after.numbers["limit"] == pytest.approx(0.05 + gap)
    assert "how far the champion falls between the old regime and the new" in after.detail
    # A champion that had partly learned the change falls less; the candidate's gain on the
    # new regime still explains its loss on the old one.
    partly = changed(
        champion=CHANGED["champion"] | {"replay": {"accuracy": 0.70}},
        candidate=CHANGED["candidate"]
        | {"baseline": {"accuracy": 0.55}, "replay": {"accuracy": 0.86}},
    )
    assert regime_gap(partly, "accuracy") == pytest.approx(0.25 + 0.16)
    assert check_baseline_drift(partly, policy, regime_change=True).passed
    # Still a bound: a candidate that moves on the old data without a matching gain on the new
    # fails.
    worse = changed(
        candidate=CHANGED["candidate"]
        | {"baseline": {"accuracy": 0.2}, "replay": {"accuracy": 0.5}}
    )
    assert regime_gap(worse, "accuracy") == pytest.approx(0.95 - 0.49 + 0.01)
    assert not check_baseline_drift(worse, policy, regime_change=True).passed


def test_a_candidate_significantly_worse_on_recent_or_replayed_data_is_rejected() -> None:
    policy = EvaluationPolicy(metrics=[Metric.ACCURACY])
    assert live_regressions(changed(), policy) == []
    worse = changed(
        deltas=[
            delta(Metric.ACCURACY, -0.08, -0.12, -0.04, dataset=REPLAY),
            delta(Metric.ACCURACY, -0.02, -0.09, 0.05, dataset=RECENT),
            delta(Metric.ACCURACY, -0.5, -0.6, -0.4, dataset=HOLDOUT),
        ]
    )
    found = live_regressions(worse, policy)
    # Only the significant one, only on recent / replay (the holdout has its own rule).
    assert len(found) == 1 and found[0].startswith("accuracy: significantly worse on the replay")


def test_the_gate_of_a_change_answering_loop() -> None:
    context = GateContext(regime_change=True, improve=Metric.ACCURACY)
    verdict = gate_verdict(changed(), spec(), context)
    checks = {check.name: check for check in verdict.checks}
    assert verdict.passed, verdict.summary
    assert checks[QUALITY_IMPROVEMENT].passed
    # The shift in predictions is explained by the significant improvement.
    assert checks[PREDICTION_SHIFT].passed and "Explained" in checks[PREDICTION_SHIFT].detail
    # The same report for a loop that answers nothing in particular fails on both guardrails.
    plain = gate_verdict(changed(), spec())
    assert not plain.passed
    assert {c.name for c in plain.checks if not c.passed} == {BASELINE_DRIFT, PREDICTION_SHIFT}
    # Without the improvement, the shift is not explained and the gate rejects.
    flat = changed(
        deltas=[delta(Metric.ACCURACY, 0.0, -0.03, 0.03, dataset=REPLAY), *CHANGED["deltas"][:3]]
    )
    verdict = gate_verdict(flat, spec(), context)
    failed = {c.name for c in verdict.checks if not c.passed}
    assert failed == {QUALITY_IMPROVEMENT, PREDICTION_SHIFT}


def test_the_metric_to_improve_comes_from_the_performance_trigger() -> None:
    def trigger(metric: str) -> Any:
        signal = PerformanceSignal(
            severity=Severity.HIGH, metric=metric, reference=0.9, current=0.5
        )
        return manual_trigger(performance=signal)

    assert improvement_metric(trigger("accuracy")) is Metric.ACCURACY
    assert improvement_metric(trigger("estimated accuracy")) is Metric.ACCURACY
    assert improvement_metric(trigger("log_loss")) is Metric.LOG_LOSS
    assert improvement_metric(trigger("revenue per user")) is None
    assert improvement_metric(manual_trigger()) is None


def test_good_reports_still_pass_as_before() -> None:
    report = EvaluationReport.model_validate(GOOD_REPORT)
    default = spec().model_copy(update={"loop": LoopPolicy()})
    assert gate_verdict(report, default).passed
