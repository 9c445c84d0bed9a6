"""Unit and property tests of the pure gate rules (no Temporal, no numpy).

Reports are built from one known-good example and edited per test; reports holding NaN or
infinities (which the pydantic models refuse at the edge) are built with `model_construct`, to
prove the rules stay total anyway.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workflows.loop.models import EvaluationReport, MetricDelta, SafetyCheck
from workflows.loop.rules import (
    BASELINE_DRIFT,
    ERROR_CONCENTRATION,
    GOLDEN,
    GOLDEN_FLOOR,
    HOLDOUT,
    PREDICTION_SHIFT,
    check_baseline_drift,
    check_error_concentration,
    check_golden_floor,
    check_prediction_shift,
    error_concentration,
    find_regressions,
    gate_verdict,
    guardrail_checks,
    kl_divergence,
)
from workflows.spec.models import EvaluationPolicy, GuardrailPolicy, LoopPolicy, Metric, ModelSpec

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
CHECK_NAMES = [GOLDEN_FLOOR, BASELINE_DRIFT, PREDICTION_SHIFT, ERROR_CONCENTRATION]


def delta(metric: Metric, value: float, low: float, high: float, dataset: str = HOLDOUT) -> Any:
    return {
        "metric": metric,
        "dataset": dataset,
        "candidate": 0.5,
        "champion": 0.5,
        "delta": value,
        "ci_low": low,
        "ci_high": high,
    }


# A candidate slightly better than its champion everywhere: every check and the gate pass.
GOOD_REPORT: dict[str, Any] = {
    "candidate": {
        "holdout": {"accuracy": 0.90, "roc_auc": 0.95, "log_loss": 0.30},
        "baseline": {"accuracy": 0.88, "log_loss": 0.32},
        "golden": {"accuracy": 0.92, "log_loss": 0.25},
    },
    "champion": {
        "holdout": {"accuracy": 0.88, "roc_auc": 0.93, "log_loss": 0.35},
        "baseline": {"accuracy": 0.87, "log_loss": 0.33},
        "golden": {"accuracy": 0.91, "log_loss": 0.27},
    },
    "rows": {"holdout": 1000, "baseline": 800, "golden": 200},
    "deltas": [
        delta(Metric.ROC_AUC, 0.02, 0.005, 0.035),
        delta(Metric.LOG_LOSS, 0.05, 0.01, 0.09),
        delta(Metric.ROC_AUC, -0.01, -0.03, 0.01, dataset=GOLDEN),
    ],
    "prediction_bins": [i / 10 for i in range(11)],
    "candidate_prediction_counts": [50, 80, 100, 120, 150, 150, 120, 100, 80, 50],
    "champion_prediction_counts": [55, 75, 105, 115, 150, 150, 125, 95, 80, 50],
    "errors_by_segment": {"north": 5, "south": 4, "east": 3},
    "segment_source": "segment column 'region'",
}


def report(**changes: Any) -> EvaluationReport:
    return EvaluationReport.model_validate(GOOD_REPORT | changes)


def unchecked_report(**changes: Any) -> EvaluationReport:
    """A report the models would refuse (NaN, infinities): what a buggy producer could send."""
    fields = GOOD_REPORT | changes
    deltas = [MetricDelta.model_construct(**d) for d in fields.pop("deltas")]
    return EvaluationReport.model_construct(**fields, deltas=deltas)


def guardrails(**fields: Any) -> GuardrailPolicy:
    return GuardrailPolicy.model_validate({"golden_floor": 0.8} | fields)


def make_spec(
    guardrail_policy: GuardrailPolicy | None = None,
    evaluation_policy: EvaluationPolicy | None = None,
) -> ModelSpec:
    loop = LoopPolicy(
        guardrails=guardrail_policy or guardrails(),
        evaluation=evaluation_policy or EvaluationPolicy(),
    )
    return ModelSpec.model_validate(
        {
            "name": "churn",
            "features": [{"name": "x1"}],
            "label": "churned",
            "data": {"labelled": "l", "baseline_holdout": "b.parquet", "golden_set": "g.parquet"},
            "loop": loop.model_dump(),
        }
    )


def assert_finite_numbers(check: SafetyCheck) -> None:
    assert all(math.isfinite(value) for value in check.numbers.values())


# ---- kl_divergence and error_concentration -------------------------------------------------


def test_kl_divergence_known_value() -> None:
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_divergence([1, 1], [1, 3]) == pytest.approx(expected, abs=1e-12)
    assert kl_divergence([10, 10], [10, 30]) == pytest.approx(expected, abs=1e-12)


def test_kl_divergence_of_a_bin_the_champion_never_used_is_large_but_finite() -> None:
    divergence = kl_divergence([1, 1], [1, 0])
    assert math.isfinite(divergence)
    assert divergence > 5


@pytest.mark.parametrize(
    ("p", "q", "problem"),
    [
        ([1, 2], [1, 2, 3], "have 2 and 3 bins"),
        ([], [], "has no bins"),
        ([0, 0], [1, 1], "candidate histogram holds no observations"),
        ([1, 1], [0, 0], "champion histogram holds no observations"),
        ([1, -1], [1, 1], "negative or non-finite"),
        ([1, math.nan], [1, 1], "negative or non-finite"),
        ([1, 1], [math.inf, 1], "negative or non-finite"),
    ],
)
def test_kl_divergence_refuses_bad_histograms(p: list[float], q: list[float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        kl_divergence(p, q)


def test_error_concentration() -> None:
    assert error_concentration({"north": 6, "south": 3, "east": 3}) == ("north", 0.5)
    assert error_concentration({"b": 2, "a": 2}) == ("a", 0.5)  # ties: alphabetical
    assert error_concentration({}) == ("", 0.0)
    assert error_concentration({"a": 0, "b": 0}) == ("", 0.0)
    with pytest.raises(ValueError, match="negative"):
        error_concentration({"a": -1, "b": 3})


# ---- golden-set floor ----------------------------------------------------------------------


def test_golden_floor_passes_above_the_floor() -> None:
    check = check_golden_floor(report(), guardrails(golden_floor=0.8))
    assert check.name == GOLDEN_FLOOR
    assert check.passed
    assert not check.near_miss
    assert check.numbers["value"] == 0.92
    assert check.numbers["limit"] == 0.8
    assert check.numbers["headroom"] == pytest.approx(0.12)
    assert "meets the floor" in check.detail


def test_golden_floor_fails_below_the_floor() -> None:
    check = check_golden_floor(report(), guardrails(golden_floor=0.95))
    assert not check.passed
    assert not check.near_miss
    assert check.numbers["headroom"] == pytest.approx(-0.03)
    assert "0.92 is below the floor 0.95" in check.detail


def test_golden_floor_is_a_ceiling_when_lower_is_better() -> None:
    # Candidate golden log loss is 0.25.
    passed = check_golden_floor(report(), guardrails(golden_metric="log_loss", golden_floor=0.4))
    assert passed.passed
    assert passed.numbers["headroom"] == pytest.approx(0.15)
    assert "within the ceiling" in passed.detail
    failed = check_golden_floor(report(), guardrails(golden_metric="log_loss", golden_floor=0.2))
    assert not failed.passed
    assert "above the ceiling" in failed.detail


@pytest.mark.parametrize(
    ("floor", "near_miss"),
    [(0.92, True), (0.85, True), (0.8, False)],  # band: 10% of the floor
)
def test_golden_floor_near_miss(floor: float, near_miss: bool) -> None:
    check = check_golden_floor(report(), guardrails(golden_floor=floor, near_miss_margin=0.1))
    assert check.passed
    assert check.near_miss is near_miss
    assert ("Near miss" in check.detail) is near_miss


def test_golden_floor_with_a_missing_metric_fails() -> None:
    check = check_golden_floor(report(), guardrails(golden_metric="roc_auc"))
    assert not check.passed
    assert check.detail == "The report has no golden-set roc_auc for the candidate."


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_golden_floor_with_a_non_finite_value_fails(value: float) -> None:
    candidate = GOOD_REPORT["candidate"] | {"golden": {"accuracy": value}}
    check = check_golden_floor(unchecked_report(candidate=candidate), guardrails())
    assert not check.passed
    assert "not a finite number" in check.detail
    assert_finite_numbers(check)


# ---- baseline drift ------------------------------------------------------------------------


def test_baseline_drift_within_the_limit() -> None:
    check = check_baseline_drift(report(), guardrails(max_baseline_drift=0.05))
    assert check.passed
    assert check.numbers["candidate"] == 0.88
    assert check.numbers["champion"] == 0.87
    assert check.numbers["value"] == pytest.approx(0.01)
    assert "moved by 0.01" in check.detail


def test_baseline_drift_is_symmetric_and_fails_beyond_the_limit() -> None:
    worse = GOOD_REPORT["candidate"] | {"baseline": {"accuracy": 0.80}}
    better = GOOD_REPORT["candidate"] | {"baseline": {"accuracy": 0.94}}
    for candidate in (worse, better):
        check = check_baseline_drift(report(candidate=candidate), guardrails())
        assert not check.passed
        assert check.numbers["value"] == pytest.approx(0.07)
        assert "beyond the limit 0.05" in check.detail


def test_baseline_drift_near_miss() -> None:
    # |0.88 - 0.87| = 0.01 against a limit of 0.0105: headroom 0.0005 within a 10% band.
    check = check_baseline_drift(report(), guardrails(max_baseline_drift=0.0105))
    assert check.passed
    assert check.near_miss


def test_baseline_drift_without_champion_passes() -> None:
    check = check_baseline_drift(report(champion=None), guardrails(max_baseline_drift=0))
    assert check.passed
    assert "No champion" in check.detail


def test_baseline_drift_with_a_missing_champion_metric_fails() -> None:
    champion = GOOD_REPORT["champion"] | {"baseline": {}}
    check = check_baseline_drift(report(champion=champion), guardrails())
    assert not check.passed
    assert "no baseline-set accuracy for the champion" in check.detail


def test_baseline_drift_with_a_non_finite_value_fails() -> None:
    champion = GOOD_REPORT["champion"] | {"baseline": {"accuracy": math.nan}}
    check = check_baseline_drift(unchecked_report(champion=champion), guardrails())
    assert not check.passed
    assert "champion is not a finite number" in check.detail
    assert_finite_numbers(check)


# ---- prediction shift ----------------------------------------------------------------------


def test_prediction_shift_of_similar_distributions_passes() -> None:
    check = check_prediction_shift(report(), guardrails())
    assert check.passed
    assert 0 < check.numbers["value"] < 0.01
    assert check.numbers["bins"] == 10


def test_prediction_shift_of_a_moved_distribution_fails() -> None:
    moved = report(candidate_prediction_counts=[0, 0, 0, 0, 0, 0, 100, 300, 400, 200])
    check = check_prediction_shift(moved, guardrails(max_prediction_kl=0.25))
    assert not check.passed
    assert check.numbers["value"] > 0.25
    assert "beyond the limit 0.25" in check.detail


def test_prediction_shift_without_champion_passes() -> None:
    check = check_prediction_shift(
        report(champion=None, champion_prediction_counts=[]), guardrails(max_prediction_kl=0)
    )
    assert check.passed
    assert "No champion" in check.detail


@pytest.mark.parametrize(
    ("champion_counts", "problem"),
    [
        ([], "have 10 and 0 bins"),
        ([1, 2, 3], "have 10 and 3 bins"),
        ([0] * 10, "champion histogram holds no observations"),
        ([math.nan] * 10, "negative or non-finite"),
    ],
)
def test_prediction_shift_with_bad_histograms_fails(
    champion_counts: list[float], problem: str
) -> None:
    check = check_prediction_shift(
        unchecked_report(champion_prediction_counts=champion_counts), guardrails()
    )
    assert not check.passed
    assert problem in check.detail
    assert check.detail.startswith("Cannot compare the prediction distributions")


# ---- error concentration -------------------------------------------------------------------


def test_error_concentration_spread_out_passes() -> None:
    check = check_error_concentration(report(), guardrails())
    assert check.passed
    assert check.numbers["value"] == pytest.approx(5 / 12)
    assert check.numbers["errors"] == 12
    assert check.numbers["segment_errors"] == 5
    assert "'north' (by segment column 'region')" in check.detail


def test_error_concentration_in_one_segment_fails() -> None:
    errors = {"false_negative": 18, "false_positive": 2}
    check = check_error_concentration(
        report(errors_by_segment=errors, segment_source="error type"), guardrails()
    )
    assert not check.passed
    assert check.numbers["value"] == 0.9
    assert "90.0% of the candidate's 20 holdout errors fall in 'false_negative'" in check.detail


def test_error_concentration_near_miss() -> None:
    # 13/20 = 0.65 against 0.7: headroom 0.05 within the band 0.07.
    check = check_error_concentration(report(errors_by_segment={"a": 13, "b": 7}), guardrails())
    assert check.passed
    assert check.near_miss


@pytest.mark.parametrize("errors", [{}, {"north": 0, "south": 0}])
def test_error_concentration_without_errors_passes(errors: dict[str, int]) -> None:
    check = check_error_concentration(report(errors_by_segment=errors), guardrails())
    assert check.passed
    assert "no errors" in check.detail


def test_error_concentration_with_negative_counts_fails() -> None:
    check = check_error_concentration(report(errors_by_segment={"a": -1}), guardrails())
    assert not check.passed
    assert "negative" in check.detail


# ---- regressions ---------------------------------------------------------------------------


def test_no_regression_when_every_metric_improves() -> None:
    assert find_regressions(report(), EvaluationPolicy()) == []


def test_a_delta_below_min_improvement_is_a_regression() -> None:
    regressions = find_regressions(report(), EvaluationPolicy(min_improvement=0.03))
    assert len(regressions) == 1
    assert regressions[0].startswith("roc_auc: holdout delta +0.02 is below the required +0.03")


def test_golden_deltas_do_not_count() -> None:
    # The golden roc_auc delta is negative; only the holdout one is compared.
    assert find_regressions(report(), EvaluationPolicy(metrics=[Metric.ROC_AUC])) == []


def test_an_insignificant_improvement_regresses_only_when_significance_is_required() -> None:
    deltas = [delta(Metric.ROC_AUC, 0.02, -0.01, 0.05), delta(Metric.LOG_LOSS, 0.05, 0.01, 0.09)]
    assert find_regressions(report(deltas=deltas), EvaluationPolicy()) == []
    regressions = find_regressions(
        report(deltas=deltas), EvaluationPolicy(require_significant=True)
    )
    assert len(regressions) == 1
    assert "roc_auc: holdout delta +0.02 is not significant" in regressions[0]
    assert "95% interval [-0.01, +0.05]" in regressions[0]


def test_a_policy_metric_without_a_delta_is_a_regression() -> None:
    regressions = find_regressions(report(), EvaluationPolicy(metrics=[Metric.ACCURACY]))
    assert regressions == ["accuracy: no holdout delta (the metric was not measured)"]


def test_nothing_regresses_without_a_champion() -> None:
    deltas = [delta(Metric.ROC_AUC, -0.5, -0.6, -0.4)]
    assert find_regressions(report(champion=None, deltas=deltas), EvaluationPolicy()) == []


def test_a_non_finite_delta_is_a_regression() -> None:
    deltas = [delta(Metric.ROC_AUC, math.nan, 0.0, 0.1), delta(Metric.LOG_LOSS, 0.05, math.nan, 1)]
    regressions = find_regressions(
        unchecked_report(deltas=deltas), EvaluationPolicy(require_significant=True)
    )
    assert regressions == [
        "roc_auc: holdout delta is not a finite number (nan)",
        "log_loss: the low end of its interval is not finite",
    ]


# ---- the verdict ---------------------------------------------------------------------------


def test_verdict_of_a_good_candidate_passes() -> None:
    verdict = gate_verdict(report(), make_spec())
    assert verdict.passed
    assert [check.name for check in verdict.checks] == CHECK_NAMES
    assert verdict.regressions == []
    assert verdict.near_misses == []
    assert verdict.summary.startswith("Passed: all 4 guardrails held")


def test_verdict_lists_near_misses_and_still_passes() -> None:
    verdict = gate_verdict(report(), make_spec(guardrails(golden_floor=0.9)))
    assert verdict.passed
    assert verdict.near_misses == [GOLDEN_FLOOR]
    assert "Near misses: golden_floor." in verdict.summary


def test_verdict_rejects_on_a_failed_check() -> None:
    verdict = gate_verdict(report(), make_spec(guardrails(golden_floor=0.95)))
    assert not verdict.passed
    assert verdict.summary.startswith(
        "Rejected. Failed golden_floor: The candidate's golden-set accuracy 0.92 is below"
    )


def test_verdict_rejects_on_a_regression() -> None:
    verdict = gate_verdict(
        report(), make_spec(evaluation_policy=EvaluationPolicy(min_improvement=0.1))
    )
    assert not verdict.passed
    assert all(check.passed for check in verdict.checks)
    assert len(verdict.regressions) == 2
    assert "Regressed: roc_auc" in verdict.summary


def test_verdict_of_a_first_deployment() -> None:
    first = report(champion=None, deltas=[], champion_prediction_counts=[])
    verdict = gate_verdict(first, make_spec())
    assert verdict.passed
    assert "there is no champion to compare with" in verdict.summary


# ---- properties ----------------------------------------------------------------------------

histogram_pairs = st.integers(1, 20).flatmap(
    lambda bins: st.tuples(
        st.lists(st.integers(0, 10_000), min_size=bins, max_size=bins).filter(any),
        st.lists(st.integers(0, 10_000), min_size=bins, max_size=bins).filter(any),
    )
)


@PROPERTY_SETTINGS
@given(histogram_pairs)
def test_kl_divergence_is_non_negative(pair: tuple[list[int], list[int]]) -> None:
    assert kl_divergence(*pair) >= 0


@PROPERTY_SETTINGS
@given(histogram_pairs)
def test_kl_divergence_of_a_histogram_with_itself_is_zero(
    pair: tuple[list[int], list[int]],
) -> None:
    assert kl_divergence(pair[0], pair[0]) == pytest.approx(0, abs=1e-12)


@PROPERTY_SETTINGS
@given(histogram_pairs, st.floats(1e-3, 1e6), st.floats(1e-3, 1e6))
def test_kl_divergence_ignores_the_scale_of_the_counts(
    pair: tuple[list[int], list[int]], p_scale: float, q_scale: float
) -> None:
    p, q = pair
    scaled = kl_divergence([c * p_scale for c in p], [c * q_scale for c in q])
    assert scaled == pytest.approx(kl_divergence(p, q), rel=1e-9, abs=1e-12)


segment_counts = st.dictionaries(st.text(min_size=1, max_size=5), st.integers(0, 1000), max_size=8)


@PROPERTY_SETTINGS
@given(segment_counts)
def test_error_concentration_share_is_a_fraction(errors: dict[str, int]) -> None:
    segment, share = error_concentration(errors)
    assert 0 <= share <= 1
    if sum(errors.values()):
        assert errors[segment] == max(errors.values())


@PROPERTY_SETTINGS
@given(st.text(min_size=1), st.integers(1, 10**9))
def test_error_concentration_in_a_single_segment_is_total(segment: str, count: int) -> None:
    assert error_concentration({segment: count}) == (segment, 1.0)


unit = st.floats(0, 1)
CLASSIFICATION_GATE_METRICS = [Metric.ACCURACY, Metric.LOG_LOSS, Metric.ROC_AUC]


@st.composite
def reports(draw: st.DrawFn, numbers: st.SearchStrategy[float] = unit) -> EvaluationReport:
    """Random reports; with `numbers` allowing NaN/infinities, unchecked ones."""

    def metrics() -> dict[str, float]:
        names = draw(st.lists(st.sampled_from(["accuracy", "log_loss"]), unique=True))
        return {name: draw(numbers) for name in names}

    bins = draw(st.integers(0, 12))
    counts = st.lists(st.integers(0, 1000), min_size=bins, max_size=bins)
    has_champion = draw(st.booleans())
    deltas = [
        MetricDelta.model_construct(
            metric=metric,
            dataset=draw(st.sampled_from([HOLDOUT, GOLDEN])),
            candidate=0.5,
            champion=0.5,
            delta=draw(numbers) - 0.5,
            ci_low=draw(numbers) - 0.9,
            ci_high=1.0,
        )
        for metric in draw(st.lists(st.sampled_from(CLASSIFICATION_GATE_METRICS), unique=True))
    ]
    return EvaluationReport.model_construct(
        candidate={"golden": metrics(), "baseline": metrics()},
        champion={"baseline": metrics()} if has_champion else None,
        rows={},
        deltas=deltas,
        prediction_bins=[],
        candidate_prediction_counts=draw(counts),
        champion_prediction_counts=draw(counts) if has_champion else [],
        errors_by_segment=draw(st.dictionaries(st.sampled_from("abcd"), st.integers(0, 50))),
        segment_source="error type",
    )


guardrail_policies = st.builds(
    GuardrailPolicy,
    golden_metric=st.sampled_from([Metric.ACCURACY, Metric.LOG_LOSS]),
    golden_floor=unit,
    baseline_metric=st.sampled_from([Metric.ACCURACY, Metric.LOG_LOSS]),
    max_baseline_drift=unit,
    max_prediction_kl=st.floats(0, 2),
    max_error_concentration=st.floats(0.01, 1),
    near_miss_margin=unit,
)
evaluation_policies = st.builds(
    EvaluationPolicy,
    metrics=st.lists(st.sampled_from(CLASSIFICATION_GATE_METRICS), min_size=1, max_size=3),
    min_improvement=st.floats(-0.2, 0.2),
    require_significant=st.booleans(),
)


@PROPERTY_SETTINGS
@given(reports(), guardrail_policies, evaluation_policies)
def test_verdict_passes_iff_every_check_passes_and_nothing_regresses(
    evaluation: EvaluationReport, guardrail_policy: GuardrailPolicy, policy: EvaluationPolicy
) -> None:
    verdict = gate_verdict(evaluation, make_spec(guardrail_policy, policy))
    assert [check.name for check in verdict.checks] == CHECK_NAMES
    assert verdict.regressions == find_regressions(evaluation, policy)
    everything_held = all(check.passed for check in verdict.checks) and not verdict.regressions
    assert verdict.passed is everything_held
    assert verdict.near_misses == [check.name for check in verdict.checks if check.near_miss]
    assert all(check.passed for check in verdict.checks if check.near_miss)


@PROPERTY_SETTINGS
@given(
    reports(numbers=st.floats(allow_nan=True, allow_infinity=True)),
    guardrail_policies,
    evaluation_policies,
)
def test_verdict_is_total_and_non_finite_numbers_never_pass(
    evaluation: EvaluationReport, guardrail_policy: GuardrailPolicy, policy: EvaluationPolicy
) -> None:
    verdict = gate_verdict(evaluation, make_spec(guardrail_policy, policy))
    for check in verdict.checks:
        assert_finite_numbers(check)
    golden = evaluation.candidate["golden"].get(guardrail_policy.golden_metric.value)
    if golden is not None and not math.isfinite(golden):
        assert not verdict.checks[0].passed


@PROPERTY_SETTINGS
@given(reports(), guardrail_policies, st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), unit)
def test_relaxing_a_threshold_never_turns_a_pass_into_a_fail(
    evaluation: EvaluationReport,
    policy: GuardrailPolicy,
    drift: float,
    kl: float,
    concentration: float,
    floor: float,
) -> None:
    # A floor relaxes downwards; a ceiling (lower-is-better golden metric) and maxima upwards.
    floor_step = floor if policy.golden_metric.higher_is_better else -floor
    relaxed = policy.model_copy(
        update={
            "golden_floor": policy.golden_floor - floor_step,
            "max_baseline_drift": policy.max_baseline_drift + drift,
            "max_prediction_kl": policy.max_prediction_kl + kl,
            "max_error_concentration": min(1.0, policy.max_error_concentration + concentration),
        }
    )
    before = guardrail_checks(evaluation, policy)
    after = guardrail_checks(evaluation, relaxed)
    for strict_check, relaxed_check in zip(before, after, strict=True):
        assert relaxed_check.passed or not strict_check.passed, strict_check.name
