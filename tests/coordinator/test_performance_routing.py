"""The coordinator's rules for `performance` triggers (pure, no Temporal): routed by severity like
drift, recorded with their numbers, and a change point becomes the regime start of every later
loop. Bad performance payloads are refused at the edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workflows.coordinator.models import Action, Reason
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.rules import CoordinatorRules, new_state
from workflows.coordinator.triggers import Severity, TriggerEvent, TriggerKind, parse_trigger
from workflows.loop.models import LoopResult, LoopStatus

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CHANGE = T0 - timedelta(hours=3)


def rules(**policy: Any) -> CoordinatorRules:
    return CoordinatorRules(new_state("churn", TriggerPolicy.model_validate(policy)))


def performance(event_id: str, severity: str, priority: int = 3, **signal: Any) -> TriggerEvent:
    return parse_trigger(
        {
            "kind": "performance",
            "event_id": event_id,
            "priority": priority,
            "performance": {
                "severity": severity,
                "metric": "accuracy",
                "reference": 0.95,
                "current": 0.52,
                "ci_low": 0.49,
                "ci_high": 0.55,
                "rows": 900,
                "score": 0.42,
                "basis": "change",
                **signal,
            },
        }
    )


def test_low_is_logged_with_its_numbers_and_starts_nothing() -> None:
    coordinator = rules()
    step = coordinator.on_trigger(performance("p-1", "low"), T0)
    decision = step.decision
    assert decision.action is Action.IGNORE and decision.reason is Reason.PERFORMANCE_LOW
    assert decision.numbers["metric"] == "accuracy" and decision.numbers["current"] == 0.52
    assert decision.numbers["reference"] == 0.95 and decision.numbers["rows"] == 900
    assert step.start is None and coordinator.state.regime_start is None


def test_medium_retrains_when_auto_retrain_is_on_and_is_suppressed_otherwise() -> None:
    step = rules().on_trigger(performance("p-1", "medium", change_at=CHANGE), T0)
    assert step.decision.action is Action.START and step.start is not None
    trigger = step.start.trigger
    assert trigger.kinds == [TriggerKind.PERFORMANCE] and not trigger.requires_approval
    assert trigger.performance is not None and trigger.performance.metric == "accuracy"
    assert trigger.regime_start == CHANGE and trigger.change_at == CHANGE
    assert step.decision.numbers["regime_start"] == CHANGE.isoformat()

    off = rules(auto_retrain=False).on_trigger(performance("p-2", "medium"), T0)
    assert off.decision.action is Action.SUPPRESS
    assert off.decision.reason is Reason.AUTO_RETRAIN_OFF
    assert "medium performance degradation" in off.decision.message


def test_high_retrains_with_approval_and_notifies_reviewers() -> None:
    step = rules().on_trigger(performance("p-1", "high"), T0)
    assert step.decision.action is Action.START and step.decision.requires_approval
    assert step.start is not None and step.start.trigger.requires_approval
    reasons = step.start.trigger.approval_reasons
    assert reasons == [
        "high performance degradation (accuracy 0.52 vs reference 0.95 on 900 labelled rows)"
    ]
    assert [n.level for n in step.notifications] == ["warning"]
    assert "retraining needs approval" in step.notifications[0].subject


def test_critical_blocks_automation_until_a_human_asks() -> None:
    coordinator = rules()
    step = coordinator.on_trigger(performance("p-1", "critical", change_at=CHANGE), T0)
    assert step.decision.action is Action.ESCALATE
    assert step.decision.reason is Reason.PERFORMANCE_CRITICAL
    assert [n.level for n in step.notifications] == ["critical"]
    assert coordinator.state.review is not None and coordinator.state.review.features == [
        "accuracy"
    ]
    # Automatic triggers wait for the human; the regime change is remembered meanwhile.
    later = coordinator.on_trigger(parse_trigger({"kind": "scheduled", "event_id": "s-1"}), T0)
    assert later.decision.reason is Reason.HUMAN_REVIEW_PENDING
    manual = coordinator.on_trigger(parse_trigger({"kind": "manual", "event_id": "m-1"}), T0)
    assert manual.start is not None and manual.start.trigger.requires_approval
    assert manual.start.trigger.regime_start == CHANGE


def test_the_regime_start_is_the_latest_change_and_applies_to_later_loops() -> None:
    coordinator = rules(cooldown="0s")
    first = coordinator.on_trigger(performance("p-1", "medium", change_at=CHANGE), T0)
    assert first.start is not None
    coordinator.on_loop_closed(
        LoopResult(loop_id=first.start.loop_id, status=LoopStatus.PROMOTED), T0 + timedelta(hours=1)
    )
    # An older change point does not move the regime start back.
    coordinator.on_trigger(
        performance("p-2", "low", change_at=CHANGE - timedelta(days=1)), T0 + timedelta(hours=2)
    )
    assert coordinator.state.regime_start == CHANGE
    # A later loop of another kind learns from the regime too.
    step = coordinator.on_trigger(
        parse_trigger({"kind": "manual", "event_id": "m-1"}), T0 + timedelta(hours=3)
    )
    assert step.start is not None and step.start.trigger.regime_start == CHANGE
    assert step.start.trigger.performance is None
    newer = CHANGE + timedelta(hours=5)
    coordinator.on_loop_closed(
        LoopResult(loop_id=step.start.loop_id, status=LoopStatus.PROMOTED), T0 + timedelta(hours=4)
    )
    coordinator.on_trigger(
        parse_trigger(
            {"kind": "drift", "event_id": "d-1", "drift": {"score": 0.2, "change_at": newer}}
        ),
        T0 + timedelta(hours=5),
    )
    assert coordinator.state.regime_start == newer


def test_merged_requests_keep_the_most_severe_degradation() -> None:
    coordinator = rules(cooldown="0s")
    coordinator.on_trigger(parse_trigger({"kind": "manual", "event_id": "m-1"}), T0)
    coordinator.on_trigger(performance("p-1", "medium", score=0.05), T0)
    coordinator.on_trigger(performance("p-2", "high", score=0.2, metric="log_loss"), T0)
    coordinator.on_trigger(performance("p-3", "medium", score=0.5), T0)
    follow_up = coordinator.state.follow_up
    assert follow_up is not None and follow_up.performance is not None
    assert follow_up.performance.severity is Severity.HIGH
    assert follow_up.performance.metric == "log_loss"


@pytest.mark.parametrize(
    ("signal", "message"),
    [
        ({"metric": "accuracy", "reference": 0.9, "current": 0.5}, "severity"),
        ({"severity": "high", "reference": 0.9, "current": 0.5}, "metric"),
        ({"severity": "high", "metric": "accuracy", "reference": 0.9}, "current"),
        (
            {
                "severity": "high",
                "metric": "accuracy",
                "reference": 0.9,
                "current": 0.5,
                "ci_low": 0.6,
                "ci_high": 0.4,
            },
            "ci_low is above ci_high",
        ),
        (
            {"severity": "high", "metric": "accuracy", "reference": 0.9, "current": float("nan")},
            "current",
        ),
        (
            {
                "severity": "high",
                "metric": "accuracy",
                "reference": 0.9,
                "current": 0.5,
                "rows": -1,
            },
            "rows",
        ),
    ],
)
def test_bad_performance_payloads_are_refused_at_the_edge(
    signal: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_trigger({"kind": "performance", "event_id": "p", "performance": signal})
    with pytest.raises(ValueError, match="needs the 'performance' object"):
        parse_trigger({"kind": "performance", "event_id": "p"})
    with pytest.raises(ValueError, match="only allowed on performance triggers"):
        parse_trigger(
            {
                "kind": "manual",
                "performance": {"severity": "high", "metric": "a", "reference": 1, "current": 0},
            }
        )
