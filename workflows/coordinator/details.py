"""The short markdown summary shown as the coordinator's current details in the Temporal UI."""

from __future__ import annotations

from workflows.coordinator.models import CoordinatorStatus


def render_details(status: CoordinatorStatus) -> str:
    state = "paused" if status.paused else "running"
    if status.paused and status.paused_reason:
        state += f" ({status.paused_reason})"
    # A blank line after the heading: the Web UI's markdown needs it to start a list.
    lines = [f"**{status.model}** coordinator: {state}", ""]
    if status.active_loop:
        lines.append(f"- active loop: `{status.active_loop}`")
    if status.review_pending:
        lines.append("- critical drift: waiting for human review (send a manual trigger)")
    if status.batch:
        lines.append(
            f"- pending batch: {status.batch.events}/{status.policy.batch_size} events, "
            f"fires by {status.batch.fires_at:%Y-%m-%d %H:%M:%S} UTC"
        )
    if status.cooldown_until:
        lines.append(f"- cooldown until {status.cooldown_until:%Y-%m-%d %H:%M:%S} UTC")
    if status.deferred:
        lines.append(
            f"- deferred: {status.deferred.events} events (priority {status.deferred.priority})"
        )
    if status.follow_up:
        lines.append(f"- follow-up after the active loop: {status.follow_up.events} events")
    if status.mode == "adaptive" and status.last_adaptive is not None:
        adaptive = status.last_adaptive
        lines.append(f"- adaptive policy (#{adaptive.seq}): {adaptive.message}")
    elif status.mode == "adaptive":
        lines.append("- adaptive policy: no labelled traffic observed yet")
    currency = status.policy.cost.currency
    lines.append(
        f"- today: {status.trainings_today}/{status.policy.max_daily_trainings} trainings, "
        f"budget left {status.budget_left:.2f} {currency}"
    )
    if status.recent_decisions:
        lines += ["", "Last decisions:", ""]
        for d in reversed(status.recent_decisions):
            events = f"{d.event_count} event" + ("s" if d.event_count != 1 else "")
            lines.append(f"- #{d.seq} **{d.action.value}** ({d.reason.value}, {events})")
    return "\n".join(lines)
