"""The coordinator in adaptive mode (pure rules, no Temporal): the cost-aware policy decides on
each window of labelled traffic the performance monitor observed and on automatic triggers,
inside the hard limits (pause, dedup, cooldown, daily limit, budget, approvals); every decision
carries its numbers. Bad adaptive settings are refused at the edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from starters.demo.synthetic import synthetic_spec
from tests.support.loop_harness import with_changes
from workflows.coordinator.models import Action, Reason
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.rules import CoordinatorRules, Step, new_state
from workflows.coordinator.triggers import PerformanceObservation, parse_trigger
from workflows.loop.models import LoopResult, LoopStatus
from workflows.spec.models import ModelSpec

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
# A retraining costs 20 (hourly rate) + 30 (overhead) = 50 EUR; an error 0.5 EUR; 1,000
# labelled answers of 2,000 served a day.
ADAPTIVE: dict[str, Any] = {
    "cooldown": "0s",
    "max_daily_trainings": 10,
    "daily_budget": 1000,
    "cost": {"currency": "EUR", "hourly_rate": 20.0},
    "adaptive": {"value_per_error": 0.5, "retraining_overhead": 30.0},
}


def rules(**changes: Any) -> CoordinatorRules:
    policy = TriggerPolicy.model_validate(ADAPTIVE | changes)
    return CoordinatorRules(new_state("churn", policy))


def observation(check: int, error_rate: float, version: str = "1", **fields: Any) -> Any:
    count = 1000
    return PerformanceObservation.model_validate(
        {
            "check_id": f"perf-churn-{check}",
            "version": version,
            "loss_sum": round(error_rate * count),
            "count": count,
            "volume": 2 * count,
            **fields,
        }
    )


def deployed(coordinator: CoordinatorRules, now: datetime, loss: float = 0.05) -> Step:
    """A first deployment (manual) whose candidate reached `loss` on its newest data."""
    step = coordinator.on_trigger(parse_trigger({"kind": "manual", "event_id": f"m-{now}"}), now)
    assert step.start is not None
    version = str(step.start.number)
    return coordinator.on_loop_closed(
        LoopResult(
            loop_id=step.start.loop_id,
            status=LoopStatus.PROMOTED,
            candidate_version=version,
            candidate_loss=loss,
            candidate_loss_rows=2000,
        ),
        now,
    )


def test_a_good_model_is_kept_and_a_degraded_one_retrained_with_the_numbers() -> None:
    coordinator = rules()
    deployed(coordinator, T0)
    for day in range(1, 6):
        step = coordinator.on_observation(observation(day, 0.05), T0 + day * DAY)
        decision = step.decision
        assert decision.action is Action.IGNORE and decision.reason is Reason.ADAPTIVE_KEEP
        assert decision.message.startswith("keep v1: ")
        assert decision.numbers["retrain"] is False and decision.numbers["retraining_cost"] == 50
        assert decision.numbers["labelled"] == 1000 and decision.numbers["served"] == 2000
        assert step.start is None
    # The concept changed: half the answers are wrong. 450 excess errors x 2 (served per
    # labelled) x 0.5 EUR per day is far more than a 50 EUR retraining.
    step = coordinator.on_observation(observation(6, 0.5), T0 + 6 * DAY)
    decision = step.decision
    assert decision.action is Action.START and decision.reason is Reason.ELIGIBLE
    assert step.start is not None and step.start.loop_id == "retrain-churn-2"
    assert decision.message.startswith("retrain v1: excess loss since v1: ")
    assert ">= retraining cost 50 EUR; started retrain-churn-2" in decision.message
    assert decision.numbers["retrain"] is True
    excess = decision.numbers["expected_excess_cost"]
    assert isinstance(excess, float) and excess >= 50
    assert decision.numbers["observed_loss"] == 0.5
    record = step.start.trigger.adaptive
    assert record is not None and record.reason in decision.message
    assert record.numbers["expected_excess_cost"] == excess
    assert coordinator.state.last_adaptive == decision
    assert coordinator.status(T0 + 6 * DAY).mode == "adaptive"


def test_a_dearer_retraining_needs_a_larger_excess() -> None:
    def first_retraining(overhead: float) -> int | None:
        coordinator = rules(adaptive={"value_per_error": 0.5, "retraining_overhead": overhead})
        deployed(coordinator, T0)
        for day in range(1, 30):
            # A slow drift: the error rate grows by a point a day.
            step = coordinator.on_observation(observation(day, 0.05 + 0.01 * day), T0 + day * DAY)
            if step.start is not None:
                return day
        return None

    cheap, dear, dearer = first_retraining(0.0), first_retraining(300.0), first_retraining(3000.0)
    assert cheap is not None and dear is not None
    assert cheap < dear and (dearer is None or dear < dearer)


def test_the_hard_limits_still_apply_to_what_the_policy_decides() -> None:
    coordinator = rules(cooldown="2d", max_daily_trainings=10)
    deployed(coordinator, T0)
    coordinator.on_observation(observation(1, 0.05), T0 + DAY)
    deferred = coordinator.on_observation(observation(2, 0.5), T0 + 1.5 * DAY)
    assert deferred.decision.action is Action.DEFER and deferred.decision.reason is Reason.COOLDOWN
    assert deferred.decision.message.startswith("retrain v1: ")
    assert "cooldown until" in deferred.decision.message
    # Paused: the policy learns, the decision is suppressed with what it would have done.
    coordinator.set_paused(True, "migration", T0 + 1.6 * DAY)
    paused = coordinator.on_observation(observation(3, 0.5), T0 + 1.7 * DAY)
    assert paused.decision.reason is Reason.PAUSED and paused.start is None
    assert "the adaptive policy said: retrain v1" in paused.decision.message
    # A repeated observation is not counted twice.
    coordinator.set_paused(False, "", T0 + 1.8 * DAY)
    again = coordinator.on_observation(observation(3, 0.5), T0 + 1.9 * DAY)
    assert again.decision.reason is Reason.DUPLICATE_EVENT

    budget = rules(daily_budget=10)
    deployed_step = budget.on_trigger(parse_trigger({"kind": "manual", "event_id": "m"}), T0)
    assert deployed_step.decision.reason is Reason.DAILY_BUDGET  # 20 > 10: even the first


def test_critical_degradations_still_ask_a_human_and_bring_their_change_point() -> None:
    coordinator = rules()
    deployed(coordinator, T0)
    change = T0 + 0.5 * DAY
    event = parse_trigger(
        {
            "kind": "performance",
            "event_id": "perf-churn-v1-change",
            "priority": 2,
            "performance": {
                "severity": "critical",
                "metric": "accuracy",
                "reference": 0.95,
                "current": 0.5,
                "change_at": change.isoformat(),
            },
        }
    )
    step = coordinator.on_observation(observation(1, 0.5, event=event), T0 + DAY)
    assert step.decision.action is Action.ESCALATE
    assert step.decision.reason is Reason.PERFORMANCE_CRITICAL
    assert coordinator.state.regime_start == change
    later = coordinator.on_observation(observation(2, 0.5), T0 + 2 * DAY)
    assert later.decision.reason is Reason.HUMAN_REVIEW_PENDING


def test_a_high_degradation_retrains_with_approval_and_the_regime_start() -> None:
    coordinator = rules()
    deployed(coordinator, T0)
    coordinator.on_observation(observation(1, 0.05), T0 + DAY)
    change = T0 + 1.5 * DAY
    event = parse_trigger(
        {
            "kind": "performance",
            "event_id": "perf-churn-v1-change",
            "performance": {
                "severity": "high",
                "metric": "accuracy",
                "reference": 0.95,
                "current": 0.5,
                "change_at": change.isoformat(),
            },
        }
    )
    step = coordinator.on_observation(observation(2, 0.5, event=event), T0 + 2 * DAY)
    assert step.start is not None and step.decision.requires_approval
    trigger = step.start.trigger
    assert trigger.regime_start == change and trigger.performance is not None
    assert step.decision.event_ids == ["perf-churn-v1-change"]


def test_stale_observations_and_new_champions() -> None:
    coordinator = rules()
    deployed(coordinator, T0)
    step = coordinator.on_observation(observation(1, 0.5), T0 + DAY)
    assert step.start is not None
    coordinator.on_loop_closed(
        LoopResult(
            loop_id=step.start.loop_id,
            status=LoopStatus.PROMOTED,
            candidate_version="2",
            candidate_loss=0.06,
            candidate_loss_rows=500,
        ),
        T0 + 1.2 * DAY,
    )
    # A check of v1 that was in flight at the promotion.
    stale = coordinator.on_observation(observation(2, 0.5, version="1"), T0 + 1.3 * DAY)
    assert stale.decision.reason is Reason.STALE_OBSERVATION and stale.start is None
    fresh = coordinator.on_observation(observation(3, 0.06, version="2"), T0 + 2 * DAY)
    assert fresh.decision.reason is Reason.ADAPTIVE_KEEP
    assert fresh.decision.message.startswith("keep v2")
    # A champion promoted outside the coordinator's loops starts a cycle of its own.
    other = coordinator.on_observation(observation(4, 0.06, version="7"), T0 + 3 * DAY)
    assert other.decision.message.startswith("keep v7")


def test_automatic_triggers_retrain_only_when_it_pays_and_humans_always_can() -> None:
    coordinator = rules()
    deployed(coordinator, T0)
    coordinator.on_observation(observation(1, 0.05), T0 + DAY)
    scheduled = coordinator.on_trigger(
        parse_trigger({"kind": "scheduled", "event_id": "weekly-1"}), T0 + 2 * DAY
    )
    assert scheduled.decision.action is Action.SUPPRESS
    assert scheduled.decision.reason is Reason.ADAPTIVE_KEEP
    assert scheduled.decision.numbers["retraining_cost"] == 50
    manual = coordinator.on_trigger(
        parse_trigger({"kind": "manual", "event_id": "ticket-9"}), T0 + 2 * DAY
    )
    assert manual.decision.action is Action.START
    assert manual.start is not None and manual.start.trigger.adaptive is None


def test_rules_mode_routes_the_observations_trigger_as_before() -> None:
    coordinator = CoordinatorRules(new_state("churn", TriggerPolicy()))
    quiet = coordinator.on_observation(observation(1, 0.05), T0)
    assert quiet.decisions == [] and coordinator.state.last_observation is not None
    event = parse_trigger(
        {
            "kind": "performance",
            "event_id": "perf-1",
            "performance": {
                "severity": "medium",
                "metric": "accuracy",
                "reference": 0.95,
                "current": 0.8,
            },
        }
    )
    step = coordinator.on_observation(observation(2, 0.2, event=event), T0)
    assert step.decision.action is Action.START and step.decision.event_ids == ["perf-1"]
    assert step.start is not None and step.start.trigger.adaptive is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"adaptive": {"value_per_error": -2}}, "value_per_error must be positive"),
        ({"adaptive": {"value_per_error": 0}}, "value_per_error must be positive"),
        (
            {"adaptive": {"value_per_error": 1}, "cost": {"hourly_rate": 0}},
            "the cost model has no rate",
        ),
        ({"mode": "adaptive"}, "needs the adaptive settings"),
    ],
)
def test_bad_adaptive_settings_are_refused_at_the_edge(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        TriggerPolicy.model_validate(changes)
    with pytest.raises(ValueError, match=message):
        TriggerPolicy().with_changes(changes | {"mode": "adaptive"})
    with pytest.raises(ValidationError, match=message):
        with_changes(synthetic_spec("m"), {"trigger_policy": changes | {"mode": "adaptive"}})


def test_a_policy_with_a_value_per_error_is_adaptive_unless_it_asks_for_the_rules() -> None:
    assert TriggerPolicy.model_validate({"adaptive": {"value_per_error": 2}}).mode == "adaptive"
    explicit = {"adaptive": {"value_per_error": 2}, "mode": "rules"}
    assert TriggerPolicy.model_validate(explicit).mode == "rules"
    assert TriggerPolicy().mode == "rules"
    # A spec file whose trigger policy says what an error is worth (and nothing of the mode).
    written = synthetic_spec("m").model_dump(mode="json", exclude={"trigger_policy"})
    policy = {"adaptive": {"value_per_error": 2}}
    spec = ModelSpec.model_validate(written | {"trigger_policy": policy})
    assert spec.trigger_policy.mode == "adaptive"
    with pytest.raises(ValidationError, match=r"performance\.enabled must be true"):
        ModelSpec.model_validate(
            written | {"trigger_policy": policy, "performance": {"enabled": False}}
        )
