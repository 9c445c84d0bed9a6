"""The approval gate's rules: when a human must approve, who may, and the reminder schedule.

Pure functions over our models (no Temporal import): the RetrainingLoop calls them and the
tests check them without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from workflows.common.models import later, scaled
from workflows.coordinator.triggers import Severity
from workflows.loop.models import GateVerdict, ReviewDecision, TriggerContext
from workflows.spec.models import ApprovalPolicy


def approval_reasons(
    policy: ApprovalPolicy,
    trigger: TriggerContext,
    first_deployment: bool,
    verdict: GateVerdict,
) -> list[str]:
    """Why this candidate needs a human before deployment (empty: it does not)."""
    reasons = []
    if policy.always:
        reasons.append("the policy always requires approval")
    if trigger.requires_approval:
        reasons += trigger.approval_reasons or ["the trigger requires approval"]
    high_drift = trigger.drift_severity in (Severity.HIGH, Severity.CRITICAL)
    if policy.on_high_drift and high_drift and not trigger.requires_approval:
        reasons.append(f"{trigger.drift_severity} drift")
    if policy.first_deployment and first_deployment:
        reasons.append("first deployment: there is no champion to compare with")
    if policy.on_near_miss and verdict.near_misses:
        reasons.append(f"near-miss guardrails: {', '.join(verdict.near_misses)}")
    return reasons


def review_refusal(
    policy: ApprovalPolicy, awaiting: bool, decided: bool, review: ReviewDecision
) -> str | None:
    """Why an approve/reject cannot be accepted now (None: it can)."""
    if decided:
        return "this loop's approval has already been decided"
    if not awaiting:
        return "this loop is not awaiting approval"
    reviewer = review.reviewer.strip()
    if not reviewer:
        return "reviewer must not be empty"
    if policy.reviewers and reviewer not in policy.reviewers:
        return f"reviewer {reviewer!r} is not on the approval allow-list"
    return None


class ApprovalEventKind(StrEnum):
    REMINDER = "reminder"
    ESCALATION = "escalation"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class ApprovalEvent:
    kind: ApprovalEventKind
    at: datetime


def next_approval_event(
    policy: ApprovalPolicy,
    requested_at: datetime,
    reminders_sent: int,
    escalated: bool,
) -> ApprovalEvent | None:
    """The next thing due while waiting: a reminder every `reminder_every`, one escalation at
    `escalate_after`, and the final timeout (unless the policy keeps waiting). Ties go to the
    timeout, then the escalation. None: nothing more is scheduled (wait for a human)."""
    candidates = []
    # Saturating: no date computed here may raise (a workflow task must never fail on one).
    if policy.on_timeout == "reject":
        timeout_at = later(requested_at, policy.timeout)
        candidates.append(ApprovalEvent(ApprovalEventKind.TIMEOUT, timeout_at))
    if not escalated:
        escalation_at = later(requested_at, policy.escalate_after)
        candidates.append(ApprovalEvent(ApprovalEventKind.ESCALATION, escalation_at))
    if policy.reminder_every > timedelta(0):
        reminder_at = later(requested_at, scaled(policy.reminder_every, reminders_sent + 1))
        candidates.append(ApprovalEvent(ApprovalEventKind.REMINDER, reminder_at))
    if not candidates:
        return None
    order = list(ApprovalEventKind)
    return min(candidates, key=lambda e: (e.at, -order.index(e.kind)))
