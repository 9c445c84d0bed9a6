"""The adaptive retraining policy as a pure class: validation at the edge, its state, and its
behaviour on simulated loss streams (noise alone, a clear degradation, a costlier retraining)."""

from __future__ import annotations

import itertools
import json
import math
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from workflows.coordinator.adaptive import (
    AdaptiveConfig,
    AdaptiveDecision,
    AdaptivePolicy,
    AdaptiveState,
)


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial draw (normal approximation above 50 rows: plenty for these streams)."""
    if n <= 50:
        return sum(rng.random() < p for _ in range(n))
    draw = round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))
    return min(n, max(0, draw))


@dataclass
class World:
    """A serving model's error rate: `base`, plus `jump` once the regime it was trained on has
    changed, plus `slope` per batch of age."""

    base: float
    changes: tuple[int, ...] = ()
    jump: float = 0.0
    slope: float = 0.0

    def regime(self, t: int) -> int:
        return sum(1 for c in self.changes if t >= c)

    def rate(self, t: int, trained_at: int) -> float:
        stale = self.jump if self.regime(t) != self.regime(trained_at) else 0.0
        return min(0.95, self.base + stale + self.slope * (t - trained_at))


def play(
    world: World, policy: AdaptivePolicy, batches: int, n: int, seed: int
) -> tuple[list[int], list[AdaptiveDecision]]:
    """Serve, observe, decide, retrain (a retrained model learns the current regime)."""
    rng = random.Random(seed)
    trained_at, retrains, decisions = 0, [], []
    for t in range(batches):
        errors = _binomial(rng, n, world.rate(t, trained_at))
        policy.observe(loss_sum=float(errors), count=n)
        decision = policy.decide()
        decisions.append(decision)
        if decision.retrain:
            retrains.append(t)
            trained_at = t + 1
            holdout = _binomial(rng, n, world.base) / n
            policy.retrained(version=str(len(retrains)), holdout_loss=holdout, holdout_count=n)
    return retrains, decisions


def policy(cost: float, **changes: object) -> AdaptivePolicy:
    return AdaptivePolicy(
        AdaptiveConfig.model_validate({"value_per_loss": 1.0, "retraining_cost": cost, **changes})
    )


# ---------------------------------------------------------------- validation at the edge


def _locations(error: ValidationError) -> set[str]:
    return {".".join(str(part) for part in e["loc"]) for e in error.errors()}


def test_config_needs_a_value_and_a_cost_and_refuses_nonsense() -> None:
    with pytest.raises(ValidationError) as missing:
        AdaptiveConfig.model_validate({"value_per_loss": 2.0})
    assert _locations(missing.value) == {"retraining_cost"}
    assert missing.value.errors()[0]["type"] == "missing"

    with pytest.raises(ValidationError) as negative:
        AdaptiveConfig.model_validate({"value_per_loss": -1.0, "retraining_cost": -5})
    assert _locations(negative.value) == {"value_per_loss", "retraining_cost"}
    assert "greater than 0" in str(negative.value)

    with pytest.raises(ValidationError) as bad:
        AdaptiveConfig.model_validate(
            {
                "value_per_loss": 1,
                "retraining_cost": 1,
                "confidence": 1.0,
                "memory": 2,
                "training_batches": 0,
                "colour": "red",
            }
        )
    assert _locations(bad.value) == {"confidence", "memory", "training_batches", "colour"}

    with pytest.raises(ValidationError):
        AdaptiveConfig(value_per_loss=float("nan"), retraining_cost=1.0)


def test_observe_and_retrained_refuse_impossible_numbers() -> None:
    subject = policy(100.0)
    with pytest.raises(ValidationError):
        subject.observe(loss_sum=-1.0, count=10)
    with pytest.raises(ValidationError):
        subject.observe(loss_sum=1.0, count=-10)
    with pytest.raises(ValidationError, match="without labelled predictions"):
        subject.observe(loss_sum=3.0, count=0)
    with pytest.raises(ValueError, match="exceeds loss_bound"):
        subject.observe(loss_sum=30.0, count=10)
    with pytest.raises(ValueError, match="holdout_count"):
        subject.retrained(holdout_loss=0.1)
    with pytest.raises(ValueError, match="not in"):
        subject.retrained(holdout_loss=1.5, holdout_count=100)
    with pytest.raises(ValueError, match="retraining_cost"):
        subject.decide(retraining_cost=-1.0)
    # Nothing was recorded by the refused calls.
    assert subject.state == AdaptiveState()
    # A loss outside [0, 1] is fine with its sum of squares (the variance comes from it).
    subject.observe(loss_sum=30.0, count=10, loss_sq_sum=100.0)
    assert subject.state.cycle.count == 10


# ---------------------------------------------------------------- decisions and their numbers


def test_a_clear_degradation_retrains_and_says_why_with_the_numbers() -> None:
    subject = policy(380.0, currency="EUR", value_per_loss=2.0)
    subject.retrained(version="7", holdout_loss=0.1, holdout_count=1000)
    for _ in range(20):
        subject.observe(loss_sum=100.0, count=1000)
        assert not subject.decide().retrain
    subject.observe(loss_sum=300.0, count=1000)
    decision = subject.decide()

    assert decision.retrain
    assert decision.basis == "degradation"
    assert decision.reason.startswith("retrain v7: excess loss since v7:")
    assert ">= retraining cost 380 EUR" in decision.reason
    assert decision.expected_excess_cost >= decision.retraining_cost == 380.0
    assert decision.current_loss == pytest.approx(0.3)
    assert decision.reference_loss == pytest.approx(0.1)
    assert decision.excess_loss_lower is not None and 0 < decision.excess_loss_lower < 0.2
    numbers = decision.numbers()
    assert numbers["expected_excess_cost"] == decision.expected_excess_cost
    assert numbers["retrain"] is True and "reason" not in numbers
    json.dumps(numbers)  # flat, JSON-ready: decision log, search attributes, metrics

    # The harness may not retrain (a cooldown): the next decision still sees the excess.
    subject.observe(loss_sum=300.0, count=1000)
    assert subject.decide().retrain
    subject.retrained(version="8")
    assert subject.decide().reason == "keep v8: no labelled traffic since it was deployed"


def test_a_dearer_retraining_needs_more_evidence() -> None:
    cheap, dear = policy(20.0), policy(2000.0)
    for subject in (cheap, dear):
        subject.retrained(version="1", holdout_loss=0.10, holdout_count=1000)
        for _ in range(10):
            subject.observe(loss_sum=100.0, count=1000)
        for _ in range(3):
            subject.observe(loss_sum=130.0, count=1000)
    assert cheap.decide().retrain
    keep = dear.decide()
    assert not keep.retrain
    assert keep.reason.startswith("keep v1:") and "< retraining cost 2,000 USD" in keep.reason
    # The same state, asked with the cheaper cost: the decision depends on the cost only.
    assert dear.decide(retraining_cost=20.0).retrain


def test_state_is_small_bounded_serialisable_and_resumes_identically() -> None:
    config = AdaptiveConfig(value_per_loss=1.0, retraining_cost=50.0, memory=16)
    subject = AdaptivePolicy(config)
    world = World(base=0.1, changes=tuple(range(30, 2000, 40)), jump=0.2, slope=0.001)
    retrains, _ = play(world, subject, 2000, 500, seed=3)
    assert len(retrains) > 40

    state = subject.state
    assert len(state.recent) <= config.memory and len(state.spreads) <= config.memory
    assert len(state.fresh) <= config.fresh_history
    assert len(state.trends) <= config.fresh_history
    payload = state.model_dump_json()
    assert len(payload) < 20_000  # carried through continue-as-new

    resumed = AdaptivePolicy(config, AdaptiveState.model_validate_json(payload))
    for loss in (50.0, 60.0, 200.0, 210.0):
        subject.observe(loss_sum=loss, count=500)
        resumed.observe(loss_sum=loss, count=500)
        assert resumed.decide() == subject.decide()
    assert resumed.state == subject.state


# ---------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    rate=st.floats(0.01, 0.45),
    labels=st.integers(20, 3000),
    factor=st.sampled_from([0.02, 0.05, 0.25, 1.0]),
    confidence=st.sampled_from([0.95, 0.99]),
    seed=st.integers(0, 2**32 - 1),
)
def test_pure_noise_rarely_fires_at_the_configured_level(
    rate: float, labels: int, factor: float, confidence: float, seed: int
) -> None:
    """On a stationary stream of pure sampling noise, retrainings happen at a rate per
    decision below 1 - confidence (in fact far below: the forecast must also reach the cost)."""
    decisions = fired = 0
    for run in range(6):
        subject = policy(factor * labels, confidence=confidence)
        retrains, made = play(World(base=rate), subject, 40, labels, seed=seed + run)
        decisions += len(made)
        fired += len(retrains)
    assert fired <= (1 - confidence) * decisions


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    rate=st.floats(0.02, 0.3),
    jump=st.floats(0.05, 0.5),
    labels=st.integers(100, 3000),
    factor=st.sampled_from([0.05, 0.25, 1.0]),
    before=st.integers(10, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_clear_degradation_fires_within_a_bounded_delay(
    rate: float, jump: float, labels: int, factor: float, before: int, seed: int
) -> None:
    """A model good for `before` batches whose error rate then rises by `jump` is replaced
    within 3 batches when the rise is clear: at least 8 standard errors of one batch, and worth
    over its healthy life at least twice the retraining cost."""
    worse = min(0.95, rate + jump)
    assume(jump >= 8 * math.sqrt(worse * (1 - worse) / labels))
    assume(jump * labels * before >= 2 * factor * labels)
    subject = policy(factor * labels)
    world = World(base=rate, changes=(before,), jump=jump)
    retrains, _ = play(world, subject, before + 10, labels, seed)
    after = [t for t in retrains if t >= before]
    assert after, "never retrained after the change"
    assert after[0] - before <= 3
    assert not [t for t in retrains if t < before]  # nothing before it


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    rate=st.floats(0.02, 0.4),
    labels=st.integers(50, 2000),
    steps=st.lists(st.floats(0.0, 0.3), min_size=3, max_size=30),
    cheaper=st.floats(0.0, 1.0),
    dearer=st.floats(0.0, 1.0),
    window=st.sampled_from([None, 3, 5]),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_decision_that_retrains_at_a_cost_retrains_at_any_lower_cost(
    rate: float,
    labels: int,
    steps: list[float],
    cheaper: float,
    dearer: float,
    window: int | None,
    seed: int,
) -> None:
    low, high = sorted((cheaper * labels, dearer * labels))
    subject = policy(high, training_batches=window)
    rng = random.Random(seed)
    for step in steps:
        errors = _binomial(rng, labels, min(0.95, rate + step))
        subject.observe(loss_sum=float(errors), count=labels)
        if subject.decide(retraining_cost=high).retrain:
            assert subject.decide(retraining_cost=low).retrain


def test_fewer_retrainings_when_they_cost_more() -> None:
    world = World(base=0.1, changes=(40, 90, 150), jump=0.15, slope=0.002)
    counts = []
    for factor in (0.02, 0.05, 0.25, 1.0, 4.0):
        total = 0
        for seed in range(4):
            retrains, _ = play(world, policy(factor * 500), 200, 500, seed)
            total += len(retrains)
        counts.append(total)
    assert counts == sorted(counts, reverse=True)
    assert counts[0] > 2 * counts[-1] > 0


# ---------------------------------------------------------------- the training window


def test_waits_for_a_clean_training_window_when_retraining_twice_would_cost_more() -> None:
    """Right after an abrupt change a retraining on the last W batches mostly learns the old
    regime. With a dear retraining the policy waits until the window holds the new regime; with
    a cheap one it retrains at once (and again later)."""
    history = [100.0] * 20

    def first_retrain(cost: float) -> tuple[int, AdaptiveDecision]:
        subject = policy(cost, training_batches=5)
        for loss in history:
            subject.observe(loss_sum=loss, count=1000)
            subject.decide()
        for k in range(1, 10):
            subject.observe(loss_sum=300.0, count=1000)
            decision = subject.decide()
            if decision.retrain:
                return k, decision
        raise AssertionError("never retrained")

    at_once, _ = first_retrain(30.0)
    assert at_once == 1
    waited, decision = first_retrain(900.0)
    assert waited == 5  # the change is as old as the training window: it learns the new regime
    assert decision.change_age_batches is not None and decision.change_age_batches >= 5

    subject = policy(900.0, training_batches=5)
    for loss in [*history, 300.0, 300.0]:
        subject.observe(loss_sum=loss, count=1000)
    keep = subject.decide()
    assert not keep.retrain and keep.wait_batches == 3
    assert "a retraining in 3 batch(es)" in keep.reason


def test_a_steady_drift_learned_from_past_models_retrains_near_the_optimal_age() -> None:
    """Error growing 0.5 point per batch of age, 1000 labels a batch, a retraining worth 1000
    errors: the cost-optimal replacement age is sqrt(2 C / (slope n)) = 20 batches."""
    slope, labels, cost = 0.005, 1000, 1000.0
    subject = policy(cost)
    retrains, decisions = play(World(base=0.1, slope=slope), subject, 300, labels, seed=7)
    optimal = math.sqrt(2 * cost / (slope * labels))
    gaps = [b - a for a, b in itertools.pairwise(retrains)][2:]
    assert gaps, retrains
    assert all(0.6 * optimal <= gap <= 1.6 * optimal for gap in gaps), (optimal, gaps)
    assert any(d.basis == "steady_drift" for d in decisions if d.retrain)


def test_the_policy_stays_workflow_safe() -> None:
    """It runs inside Temporal's workflow sandbox: no numpy (nor anything that pulls it in)."""
    probe = (
        "import sys, workflows.coordinator.adaptive; "
        "print(sorted({'numpy', 'scipy'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
