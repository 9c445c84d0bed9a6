"""Rich output for model specs, loops and audit records (the CLI's output)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.console import Console
from rich.table import Table

from starters.api.loops import LoopSummary
from workflows.loop.audit import AuditRecord
from workflows.loop.models import LoopStatus
from workflows.spec.models import ModelSpec

OUTCOME_STYLE = {
    LoopStatus.PROMOTED.value: "bold green",
    LoopStatus.REJECTED_BY_GATE.value: "yellow",
    LoopStatus.REJECTED_BY_REVIEWER.value: "magenta",
    LoopStatus.INSUFFICIENT_DATA.value: "cyan",
    LoopStatus.ROLLED_BACK.value: "yellow",
    LoopStatus.FAILED.value: "bold red",
    LoopStatus.CANCELLED.value: "dim",
}


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def specs_table(specs: Sequence[ModelSpec]) -> Table:
    table = Table(title="registered models")
    for column in ("model", "task", "backend", "features", "label", "entrypoint", "spec"):
        table.add_column(column)
    for spec in specs:
        table.add_row(
            spec.name,
            spec.task.value,
            spec.backend,
            str(len(spec.features)),
            spec.label,
            spec.training.entrypoint,
            spec.content_hash()[:12],
        )
    return table


def loops_table(model: str, rows: Sequence[LoopSummary]) -> Table:
    table = Table(title=f"{model}: retraining loops")
    for column in ("loop", "execution", "stage", "outcome", "started", "closed", "summary"):
        table.add_column(column, overflow="fold")
    for row in rows:
        outcome = row.outcome or "-"
        table.add_row(
            row.loop_id,
            row.execution,
            row.stage or "-",
            f"[{OUTCOME_STYLE.get(outcome, '')}]{outcome}[/]" if row.outcome else "-",
            _time(row.started),
            _time(row.closed),
            row.summary,
        )
    return table


def print_audit(console: Console, record: AuditRecord) -> None:
    outcome = record.outcome
    status = outcome.status.value if outcome else "running"
    console.print(
        f"[bold]{record.loop_id}[/] ({record.model}): [{OUTCOME_STYLE.get(status, '')}]{status}[/]"
    )
    if outcome:
        console.print(f"  {outcome.summary}")
    trigger = record.trigger
    console.print(
        f"trigger: {', '.join(k.value for k in trigger.kinds)}, priority {trigger.priority}, "
        f"{len(trigger.events)} events ({trigger.origin}); coordinator {record.coordinator_id}"
    )
    if record.data_window:
        window = record.data_window
        console.print(f"data: {window.query}")
        checks = Table(title="data coverage")
        for column in ("check", "passed", "value", "threshold", "detail"):
            checks.add_column(column)
        for check in window.checks:
            checks.add_row(
                check.name,
                "yes" if check.passed else "[red]no[/]",
                f"{check.value:g}",
                f"{check.threshold:g}",
                check.detail,
            )
        console.print(checks)
    if record.candidate:
        champion = record.champion.version if record.champion else "none"
        console.print(f"candidate version {record.candidate.version}, champion {champion}")
    if record.evaluation:
        metrics = Table(title="evaluation")
        for column in ("dataset", "metric", "candidate", "champion"):
            metrics.add_column(column)
        theirs = record.evaluation.champion or {}
        for dataset, values in record.evaluation.candidate.items():
            for metric, value in values.items():
                champion_value = theirs.get(dataset, {}).get(metric)
                metrics.add_row(
                    dataset,
                    metric,
                    f"{value:.4f}",
                    "-" if champion_value is None else f"{champion_value:.4f}",
                )
        console.print(metrics)
    if record.verdict:
        gates = Table(title="guardrails")
        for column in ("check", "verdict", "numbers", "detail"):
            gates.add_column(column, overflow="fold")
        for safety in record.verdict.checks:
            verdict = "[green]pass[/]" if safety.passed else "[red]FAIL[/]"
            if safety.passed and safety.near_miss:
                verdict = "[yellow]pass (near miss)[/]"
            numbers = ", ".join(f"{k}={v:.4g}" for k, v in safety.numbers.items())
            gates.add_row(safety.name, verdict, numbers, safety.detail)
        for regression in record.verdict.regressions:
            gates.add_row("improvement", "[red]FAIL[/]", "", regression)
        console.print(gates)
    approval = record.approval
    if approval.required:
        console.print(f"approval required: {'; '.join(approval.reasons)}")
        if approval.review:
            review = approval.review
            who = review.origin and (review.origin.user_name or review.origin.user_id)
            origin = f" from {review.origin.channel} ({who})" if review.origin else ""
            console.print(
                f"  {review.decision}d by {review.reviewer} at {_time(review.at)} via "
                f"{review.via}{origin}: {review.comment or '(no comment)'}"
            )
        if approval.timed_out_at:
            console.print(f"  timed out at {_time(approval.timed_out_at)}")
        console.print(
            f"  reminders sent: {approval.reminders_sent}, escalated: "
            f"{_time(approval.escalated_at)}, ignored reviews: {len(approval.ignored)}"
        )
    if record.deployment:
        console.print(f"deployment ({record.deployment.mode}): {record.deployment.verdict}")
