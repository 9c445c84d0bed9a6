"""The approval gate's pure rules: who must approve, who may, and the reminder schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tests.support.loop_harness import manual_trigger
from workflows.coordinator.triggers import Severity, TriggerKind
from workflows.loop.approval import (
    ApprovalEventKind,
    approval_reasons,
    next_approval_event,
    review_refusal,
)
from workflows.loop.models import GateVerdict, ReviewDecision
from workflows.spec.models import ApprovalPolicy

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
PASSED = GateVerdict(passed=True, checks=[])


def test_no_reasons_for_a_routine_retraining() -> None:
    assert approval_reasons(ApprovalPolicy(), manual_trigger(), False, PASSED) == []


def test_each_reason_is_named() -> None:
    near_miss = GateVerdict(passed=True, checks=[], near_misses=["golden_floor"])
    reasons = approval_reasons(
        ApprovalPolicy(always=True),
        manual_trigger(drift_severity=Severity.HIGH, kinds=[TriggerKind.DRIFT]),
        True,
        near_miss,
    )
    assert reasons == [
        "the policy always requires approval",
        "high drift",
        "first deployment: there is no champion to compare with",
        "near-miss guardrails: golden_floor",
    ]


def test_trigger_reasons_are_not_repeated_as_drift() -> None:
    context = manual_trigger(
        drift_severity=Severity.HIGH,
        requires_approval=True,
        approval_reasons=["high drift (score 0.42)"],
    )
    assert approval_reasons(ApprovalPolicy(), context, False, PASSED) == ["high drift (score 0.42)"]


def test_policy_switches_turn_reasons_off() -> None:
    policy = ApprovalPolicy(first_deployment=False, on_high_drift=False, on_near_miss=False)
    near_miss = GateVerdict(passed=True, checks=[], near_misses=["kl"])
    assert (
        approval_reasons(policy, manual_trigger(drift_severity=Severity.HIGH), True, near_miss)
        == []
    )


def test_review_refusals() -> None:
    policy = ApprovalPolicy(reviewers=["ana", "bo"])
    ana = ReviewDecision(reviewer="ana")
    assert review_refusal(policy, True, False, ana) is None
    assert review_refusal(policy, False, False, ana) == "this loop is not awaiting approval"
    assert "already been decided" in (review_refusal(policy, True, True, ana) or "")
    assert review_refusal(policy, True, False, ReviewDecision(reviewer="  ")) == (
        "reviewer must not be empty"
    )
    assert "allow-list" in (
        review_refusal(policy, True, False, ReviewDecision(reviewer="eve")) or ""
    )
    assert review_refusal(ApprovalPolicy(), True, False, ReviewDecision(reviewer="eve")) is None


def test_schedule_reminds_escalates_and_times_out() -> None:
    policy = ApprovalPolicy(
        reminder_every=timedelta(hours=4),
        escalate_after=timedelta(hours=10),
        timeout=timedelta(hours=12),
    )
    seen = []
    reminders, escalated = 0, False
    while (event := next_approval_event(policy, T0, reminders, escalated)) is not None:
        seen.append((event.kind, event.at - T0))
        if event.kind is ApprovalEventKind.TIMEOUT:
            break
        if event.kind is ApprovalEventKind.REMINDER:
            reminders += 1
        else:
            escalated = True
    hours = timedelta(hours=1)
    assert seen == [
        (ApprovalEventKind.REMINDER, 4 * hours),
        (ApprovalEventKind.REMINDER, 8 * hours),
        (ApprovalEventKind.ESCALATION, 10 * hours),
        (ApprovalEventKind.TIMEOUT, 12 * hours),
    ]


def test_keep_waiting_never_times_out() -> None:
    policy = ApprovalPolicy(on_timeout="keep_waiting", reminder_every=timedelta(0))
    event = next_approval_event(policy, T0, 0, False)
    assert event is not None and event.kind is ApprovalEventKind.ESCALATION
    assert next_approval_event(policy, T0, 0, True) is None


@given(
    reminder=st.integers(0, 100),
    escalate=st.integers(0, 100),
    timeout=st.integers(0, 100),
    reminders=st.integers(0, 30),
    escalated=st.booleans(),
)
def test_next_event_is_the_earliest_due(
    reminder: int, escalate: int, timeout: int, reminders: int, escalated: bool
) -> None:
    policy = ApprovalPolicy(
        reminder_every=timedelta(hours=reminder),
        escalate_after=timedelta(hours=escalate),
        timeout=timedelta(hours=timeout),
    )
    event = next_approval_event(policy, T0, reminders, escalated)
    assert event is not None  # on_timeout=reject always schedules the timeout
    assert event.at <= T0 + timedelta(hours=timeout)
    if not escalated:
        assert event.at <= T0 + timedelta(hours=escalate)
    if event.kind is ApprovalEventKind.REMINDER:
        assert event.at < T0 + timedelta(hours=timeout)
