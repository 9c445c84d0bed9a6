"""The sequential change detector (activities/drift/change_detection.py) on river's streams.

A small tree trained on the pre-change concept scores streams whose concept changes abruptly,
gradually, or not at all; its 0/1 errors are the detector's input. Claims:

- abrupt change (SEA 0 -> 3, about +10 points of error; Agrawal 0 -> 2, the demo's change,
  about +50): detected on every seed within a bounded delay, and the estimated change point is
  close to the true one;
- gradual change (a 1,000-row transition): detected during the transition or shortly after;
- no change: at most the configured false-alarm rate, checked against a binomial bound over
  many seeds (river streams, and plain Bernoulli streams at several error rates);
- a change in the last fifth of a window, which the window's average hides behind the
  tolerance, is caught, and the stretch since the change shows its full size.

The delay bounds come from ADWIN's cut threshold: a shift of `eps` in the mean of a stream of
variance `var` is cut once the new sub-window holds about `n* = 2 var d' / eps^2 + 2 d' / (3 eps)`
rows, with `d' = ln(2 ln(width) / delta)` (river's `evaluate_cut`). At `3 n*` rows the threshold
is `eps / sqrt(3)` while the noise of the sub-window's mean is `eps / sqrt(6 d')`: missing the
change then takes a deviation of `(1 - 1/sqrt(3)) sqrt(6 d')`, about 3.4 standard deviations. The
tests allow `3 n*` plus one `clock` period between checks.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import scipy.stats  # type: ignore[import-untyped, unused-ignore]

from activities.drift.change_detection import CLOCK, adwin_delta, detect_changes, unit_losses
from activities.drift.performance_metrics import classifier_outcome, realized_quality, subset
from tests.support.performance_streams import ABRUPT_WIDTH, drifting, friedman, stationary
from workflows.drift.performance_models import (
    Basis,
    ChangePoint,
    DetectorState,
    LossKind,
    PerformancePolicy,
    PerformanceReport,
    PerformanceRows,
    PerformanceStatus,
)
from workflows.drift.performance_rules import assess_performance, judgements
from workflows.spec.models import Metric

FALSE_ALARM_RATE = 0.05
SEEDS = range(6)


def delay_bound(before: float, after: float, rows: int, false_alarm_rate: float) -> int:
    """Three times ADWIN's approximate detection delay for a 0/1 stream whose error rate moves
    from `before` to `after`, plus a clock period (see the module's docstring)."""
    delta = adwin_delta(false_alarm_rate, rows)
    d_prime = math.log(2 * math.log(rows) / delta)
    eps = after - before
    mean = (before + after) / 2
    var = mean * (1 - mean)
    n1 = 2 * var * d_prime / eps**2 + 2 * d_prime / (3 * eps)
    return int(3 * n1) + CLOCK


def first_degradation(losses: np.ndarray) -> tuple[ChangePoint | None, DetectorState]:
    state = detect_changes(losses, false_alarm_rate=FALSE_ALARM_RATE)
    return next((change for change in state.changes if change.degraded), None), state


# ---- abrupt change -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "rows", "position"), [("sea", 5000, 3000), ("agrawal", 1500, 1000)]
)
def test_abrupt_change_is_detected_within_a_bounded_delay(
    family: str, rows: int, position: int
) -> None:
    delays, offsets = [], []
    for seed in SEEDS:
        scored = drifting(family, seed, rows, position, ABRUPT_WIDTH)
        errors = scored.errors
        bound = delay_bound(errors[:position].mean(), errors[position:].mean(), rows, 0.05)
        change, state = first_degradation(errors)
        assert change is not None, f"{family} seed {seed}: no degradation found"
        # Nothing fired before the change (a false alarm would show as an earlier change).
        assert state.changes[0].detected_index >= position - ABRUPT_WIDTH
        delay = change.detected_index - position
        delays.append(delay)
        offsets.append(change.index - position)
        assert 0 <= delay <= bound, f"{family} seed {seed}: delay {delay} > {bound}"
        assert change.mean_after - change.mean_before > 0.05
    # The least-squares change point lands near the true one: within the transition and a few
    # dozen rows of noise (the delays run to hundreds of rows for SEA).
    assert max(abs(offset) for offset in offsets) <= max(ABRUPT_WIDTH, 0.6 * max(delays))
    print(f"{family}: delays {delays}, change point offsets {offsets}")


# ---- gradual change ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "rows", "position", "width"),
    [("sea", 6000, 3500, 1000), ("agrawal", 2000, 1200, 800)],
)
def test_gradual_change_is_detected_during_its_transition(
    family: str, rows: int, position: int, width: int
) -> None:
    # river's mixture reaches 12% of the new concept half a width before the position.
    start, end = position - width // 2, position + width // 2
    for seed in SEEDS[:3]:
        scored = drifting(family, seed, rows, position, width)
        errors = scored.errors
        bound = delay_bound(errors[:start].mean(), errors[end:].mean(), rows, 0.05)
        change, state = first_degradation(errors)
        assert change is not None, f"{family} seed {seed}: no degradation found"
        assert state.changes[0].detected_index >= start
        assert change.detected_index <= end + bound
        # The estimated change point lies within the transition (or just around it).
        assert start - bound <= change.index <= end
        print(f"{family} seed {seed}: change {change.index}, detected {change.detected_index}")


# ---- no change: the false-alarm rate -------------------------------------------------------


def most_alarms(trials: int, rate: float) -> int:
    """The most false alarms `trials` independent checks at `rate` give, but with probability
    0.001: seeing more refutes the claimed rate."""
    return int(scipy.stats.binom.ppf(0.999, trials, rate))


def test_stationary_river_streams_raise_at_most_the_configured_false_alarm_rate() -> None:
    alarms = trials = 0
    for family, count in (("sea", 32), ("hyperplane", 32)):
        for seed in range(count):
            errors = stationary(family, seed, 2000).errors
            trials += 1
            alarms += detect_changes(errors, false_alarm_rate=FALSE_ALARM_RATE).detected
    print(f"river streams: {alarms} false alarm(s) in {trials} checks")
    assert alarms <= most_alarms(trials, FALSE_ALARM_RATE)


@pytest.mark.parametrize("error_rate", [0.02, 0.1, 0.3, 0.5])
def test_stationary_bernoulli_streams_at_the_configured_rate(error_rate: float) -> None:
    rng = np.random.default_rng(int(error_rate * 1000))
    trials, alarms = 300, 0
    for _ in range(trials):
        errors = (rng.random(1500) < error_rate).astype(np.float64)
        alarms += detect_changes(errors, false_alarm_rate=FALSE_ALARM_RATE).detected
    print(f"Bernoulli({error_rate}): {alarms} false alarm(s) in {trials} checks")
    assert alarms <= most_alarms(trials, FALSE_ALARM_RATE)


def test_a_looser_rate_detects_sooner() -> None:
    """The rate is a real knob: a larger false-alarm rate means a smaller threshold."""
    errors = drifting("sea", 3, 5000, 3000, ABRUPT_WIDTH).errors
    strict = detect_changes(errors, false_alarm_rate=0.001).changes[0].detected_index
    loose = detect_changes(errors, false_alarm_rate=0.2).changes[0].detected_index
    assert loose <= strict
    assert adwin_delta(0.2, 5000) > adwin_delta(0.001, 5000)


# ---- what a one-shot window misses ---------------------------------------------------------


def test_a_change_in_the_last_fifth_of_a_window_hides_from_its_average() -> None:
    """SEA 0 -> 3 at row 4,000 of 5,000: the window's accuracy falls a couple of points, under
    the 5% tolerance; the detector finds the change and the stretch since it falls ~10 points."""
    rows, position = 5000, 4000
    policy = PerformancePolicy(metrics=[Metric.ACCURACY], min_degradation=0.05)
    # The reference: the model's accuracy on the pre-change concept (other rows).
    reference_rows = stationary("sea", 999, 5000)
    reference = 1 - reference_rows.errors.mean()
    scored = drifting("sea", 11, rows, position, ABRUPT_WIDTH)
    outcome = classifier_outcome(scored.labels, scored.predicted, proba=scored.proba)
    window = realized_quality(outcome, [Metric.ACCURACY], reference={Metric.ACCURACY: reference})
    change, state = first_degradation(scored.errors)
    assert change is not None and change.index > 0.75 * rows
    since = realized_quality(
        subset(outcome, change.index), [Metric.ACCURACY], reference={Metric.ACCURACY: reference}
    )
    before = realized_quality(subset(outcome, 0, change.index), [Metric.ACCURACY])
    report = PerformanceReport(
        model="sea",
        check_id="c1",
        checked_at=datetime(2026, 1, 2, tzinfo=UTC),
        window_start=datetime(2026, 1, 1, tzinfo=UTC),
        window_end=datetime(2026, 1, 2, tzinfo=UTC),
        task="classification",
        rows=PerformanceRows(labels=rows, labelled=rows),
        quality=window,
        before_change=before,
        since_change=since,
        detector=state,
    )
    made = {j.basis: j for j in judgements(report, policy)}
    assert made[Basis.REALIZED].status is not PerformanceStatus.DEGRADED
    assert made[Basis.REALIZED].degradation < 0.05
    assert made[Basis.CHANGE].status is PerformanceStatus.DEGRADED
    verdict = assess_performance(report, policy)
    assert verdict.status is PerformanceStatus.DEGRADED
    assert verdict.headline is not None and verdict.headline.basis is Basis.CHANGE
    print(
        f"window accuracy {window[0].value:.3f} vs reference {reference:.3f}; since the change "
        f"at {change.index}: {since[0].value:.3f} [{since[0].ci_low:.3f}, {since[0].ci_high:.3f}]"
        f"; verdict {verdict.summary}"
    )


# ---- regression: absolute errors -----------------------------------------------------------


def test_regression_change_on_scaled_absolute_errors() -> None:
    rows, position = 3000, 2000
    # The scale: the 99th percentile of the tree's absolute errors before any change.
    truth, predicted = friedman(seed=321, rows=2000, position=10**7)
    scale = float(np.quantile(np.abs(predicted - truth), 0.99))
    truth, predicted = friedman(seed=5, rows=rows, position=position)
    losses = np.abs(predicted - truth)
    state = detect_changes(
        losses, kind=LossKind.ABSOLUTE_ERROR, scale=scale, false_alarm_rate=FALSE_ALARM_RATE
    )
    assert state.degraded and state.loss_scale == scale
    change = state.changes[0]
    assert position <= change.detected_index <= position + 300
    assert abs(change.index - position) <= 100
    # Means are in the loss's own units, not the scaled ones.
    assert change.mean_before == pytest.approx(losses[: change.index].mean())


# ---- the detector's parts ------------------------------------------------------------------


def test_change_point_and_times_on_a_known_step() -> None:
    start = datetime(2026, 2, 1, tzinfo=UTC)
    times = [start + timedelta(minutes=i) for i in range(400)]
    losses = np.r_[np.zeros(250), np.ones(150)]
    state = detect_changes(losses, times=times, false_alarm_rate=0.01)
    change = state.changes[0]
    assert change.index == 250
    assert change.at == times[250]
    assert change.detected_at == times[change.detected_index]
    assert (change.mean_before, change.mean_after) == (0.0, 1.0)
    assert state.observations == 400 and state.mean == pytest.approx(150 / 400)
    # numpy datetimes (what the capture reader gives) are read as UTC.
    as_numpy = np.array([t.replace(tzinfo=None) for t in times], dtype="datetime64[us]")
    assert detect_changes(losses, times=as_numpy).changes[0].at == times[250]


def test_an_improvement_is_found_but_is_not_a_degradation() -> None:
    losses = np.r_[np.ones(300), np.zeros(300)]
    state = detect_changes(losses)
    assert state.detected and not state.degraded
    # Worse again later: the latest change decides.
    state = detect_changes(np.r_[losses, np.ones(300)])
    assert [c.degraded for c in state.changes] == [False, True] and state.degraded


def test_the_delta_is_the_rate_shared_over_the_horizon_checks() -> None:
    assert adwin_delta(0.01, 3200) == pytest.approx(0.01 / 100)
    assert adwin_delta(0.01, 10) == 0.01
    state = detect_changes(np.zeros(100), false_alarm_rate=0.02, horizon=6400)
    assert state.delta == pytest.approx(0.02 / 200) and state.horizon == 6400
    with pytest.raises(ValueError, match="false_alarm_rate"):
        adwin_delta(0.0, 100)


@pytest.mark.parametrize(
    ("losses", "kind", "scale", "message"),
    [
        ([0.0, 0.5], LossKind.ZERO_ONE, None, "0 or 1"),
        ([0.0, -1.0], LossKind.ABSOLUTE_ERROR, 1.0, "negative"),
        ([0.0, math.nan], LossKind.ZERO_ONE, None, "finite"),
        ([0.3, 2.0], LossKind.LOG_LOSS, None, "unbounded"),
        ([0.3, 2.0], LossKind.SQUARED_ERROR, 0.0, "unbounded"),
    ],
)
def test_losses_the_detector_refuses(
    losses: list[float], kind: LossKind, scale: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        detect_changes(losses, kind=kind, scale=scale)


def test_unbounded_losses_are_scaled_and_clipped() -> None:
    scaled = unit_losses([0.0, 1.0, 4.0, 40.0], LossKind.SQUARED_ERROR, scale=4.0)
    assert scaled.tolist() == [0.0, 0.25, 1.0, 1.0]
