"""Rich tables for decisions, coordinator status and policies (the CLI's output)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from starters.api.coordinators import CoordinatorSummary
from workflows.common.models import format_duration
from workflows.coordinator.models import Action, CoordinatorStatus, Decision
from workflows.coordinator.policy import TriggerPolicy

ACTION_STYLE = {
    Action.START: "bold green",
    Action.BUFFER: "cyan",
    Action.DEFER: "yellow",
    Action.SUPPRESS: "magenta",
    Action.IGNORE: "dim",
    Action.ESCALATE: "bold red",
}


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _numbers(decision: Decision) -> str:
    parts = [f"{k}={v}" for k, v in decision.numbers.items() if v is not None]
    if decision.error:
        parts.append(f"error: {decision.error}")
    return "\n".join(parts)


def decision_panel(decision: Decision) -> Panel:
    style = ACTION_STYLE[decision.action]
    lines = [
        Text.assemble(("action  ", "bold"), (decision.action.value, style)),
        Text.assemble(("reason  ", "bold"), decision.reason.value),
        Text.assemble(("message ", "bold"), decision.message),
        Text.assemble(("events  ", "bold"), ", ".join(decision.event_ids) or "-"),
    ]
    if decision.loop_id:
        lines.append(Text.assemble(("loop    ", "bold"), decision.loop_id))
    if decision.numbers or decision.error:
        lines.append(Text(_numbers(decision), style="dim"))
    return Panel(Group(*lines), title=f"decision #{decision.seq}", expand=False)


def decisions_table(decisions: Sequence[Decision], title: str = "decisions") -> Table:
    table = Table(title=title or None)
    for column in ("#", "UTC", "action", "reason", "origin", "prio", "events"):
        table.add_column(column, overflow="fold", no_wrap=column in ("UTC", "action"))
    table.add_column("message", overflow="fold", ratio=1, min_width=30)
    for d in decisions:
        events = ", ".join(d.event_ids[:3]) + (
            f" (+{d.event_count - 3})" if d.event_count > 3 else ""
        )
        table.add_row(
            str(d.seq),
            d.at.strftime("%H:%M:%S"),
            Text(d.action.value, style=ACTION_STYLE[d.action]),
            d.reason.value,
            d.origin,
            "-" if d.priority is None else str(d.priority),
            events,
            d.message + (f"\n{d.error}" if d.error else ""),
        )
    return table


def status_table(status: CoordinatorStatus) -> Table:
    table = Table(title=f"coordinator-{status.model}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    paused = f"yes ({status.paused_reason})" if status.paused else "no"
    table.add_row("paused", paused)
    table.add_row("active loop", status.active_loop or "-")
    table.add_row("review pending", "yes: send a manual trigger" if status.review_pending else "no")
    if status.batch:
        table.add_row(
            "pending batch",
            f"{status.batch.events}/{status.policy.batch_size} events, {status.batch.uris} uris, "
            f"fires by {_time(status.batch.fires_at)}",
        )
    table.add_row("cooldown until", _time(status.cooldown_until))
    if status.deferred:
        table.add_row(
            "deferred",
            f"{status.deferred.events} events, priority {status.deferred.priority}, "
            f"until {_time(status.deferred.until)}",
        )
    if status.follow_up:
        table.add_row(
            "follow-up", f"{status.follow_up.events} events, priority {status.follow_up.priority}"
        )
    currency = status.policy.cost.currency
    table.add_row(
        f"today ({status.day})",
        f"{status.trainings_today}/{status.policy.max_daily_trainings} trainings, "
        f"spent {status.spent_today:.2f} {currency}, left {status.budget_left:.2f} {currency}",
    )
    table.add_row("loops started", str(status.loops_started))
    table.add_row("events accepted", str(status.events_accepted))
    if status.last_outcome:
        o = status.last_outcome
        table.add_row("last outcome", f"{o.loop_id}: {o.status.value} {o.summary}")
    table.add_row("policy version", str(status.policy_version))
    return table


def coordinators_table(rows: Sequence[CoordinatorSummary]) -> Table:
    table = Table(title="coordinators")
    for column in ("model", "workflow id", "status", "paused", "active loop", "started"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.model,
            row.workflow_id,
            row.status,
            "-" if row.paused is None else ("yes" if row.paused else "no"),
            row.active_loop or "-",
            row.started,
        )
    return table


def policy_table(policy: TriggerPolicy) -> Table:
    table = Table(title="trigger policy", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in policy.model_dump().items():
        if hasattr(value, "total_seconds"):
            value = format_duration(value)
        table.add_row(name, str(value))
    return table
