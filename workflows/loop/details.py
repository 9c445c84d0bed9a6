"""The loop's current details in the Temporal UI (markdown), also the body of its notifications.

While the loop waits for approval it shows candidate vs champion, the guardrail verdicts and
the exact commands to approve or reject.
"""

from __future__ import annotations

import json

from workflows.loop.audit import LoopView
from workflows.loop.models import EvaluationReport, GateVerdict
from workflows.slots.models import SlotWait

# Shown under the Web UI's "Details" of every loop and rollout (static: set at start).
STATIC_DETAILS = (
    "Current details below show the step, the numbers and what to do next. A blank panel means "
    "no worker has run this execution's code since it started or since the server restarted: "
    "start one with `retrain worker` (nothing is lost meanwhile; the execution resumes)."
)
# Ignored approve/reject messages shown (the audit record keeps the last 50).
IGNORED_SHOWN = 5


def render_loop_details(view: LoopView) -> str:
    record = view.record
    lines = [f"**{record.model}** retraining `{record.loop_id}`: {view.stage.value}", ""]
    trigger = record.trigger
    kinds = ", ".join(kind.value for kind in trigger.kinds)
    lines.append(f"- trigger: {kinds} (priority {trigger.priority}, {trigger.origin})")
    if record.data_window:
        window = record.data_window
        lines.append(
            f"- data: {window.start}..{window.end}, {window.labelled_rows} labelled rows, "
            f"{window.days_present}/{window.days_expected} days"
        )
    if record.training_slot:
        lines.append(_slot_line(record.training_slot))
    if record.candidate:
        champion = record.champion.version if record.champion else "none"
        lines.append(f"- candidate: version {record.candidate.version} (champion: {champion})")
    if record.evaluation:
        lines += ["", *_metrics_table(record.evaluation)]
    if record.verdict:
        lines += ["", *_checks_table(record.verdict)]
    deployment = record.deployment
    if deployment and deployment.rollout_id:
        lines.append(
            f"- deployment: staged rollout `{deployment.rollout_id}` "
            f"(`retrain rollout status {record.model}`)"
        )
    if view.awaiting_approval:
        lines += ["", *_approval_help(view)]
    if record.approval.review:
        review = record.approval.review
        origin = f" from {review.origin.channel}" if review.origin else ""
        lines += ["", f"- {review.decision}d by {review.reviewer} via {review.via}{origin}"]
    if record.approval.ignored:
        ignored = record.approval.ignored
        lines += ["", f"Ignored reviews ({len(ignored)}, latest last):", ""]
        for item in ignored[-IGNORED_SHOWN:]:
            who = f" from {item.reviewer}" if item.reviewer else ""
            lines.append(f"- {item.at:%H:%M:%S} {item.decision}{who}: {item.reason[:300]}")
    if record.outcome:
        lines += ["", f"**Outcome: {record.outcome.status.value}**: {record.outcome.summary}"]
    return "\n".join(lines)


def _slot_line(slot: SlotWait) -> str:
    if slot.granted_at is None and slot.released_at is None:
        place = f"#{slot.position} in the queue" if slot.position else "queued"
        limit = f", limit {slot.limit}" if slot.limit else ""
        return (
            f"- training slot: waiting since {slot.requested_at:%Y-%m-%d %H:%M:%S} "
            f"({place}{limit}; `retrain slots show`)"
        )
    if slot.granted_at is None:
        return "- training slot: stopped waiting before a slot was free"
    return f"- training slot: granted after {slot.waited_seconds or 0:.0f}s of waiting"


def _metrics_table(report: EvaluationReport) -> list[str]:
    rows = ["| dataset | metric | candidate | champion |", "|---|---|---|---|"]
    for dataset, metrics in report.candidate.items():
        champion = (report.champion or {}).get(dataset, {})
        for metric, value in metrics.items():
            theirs = champion.get(metric)
            shown = f"{theirs:.4f}" if theirs is not None else "-"
            rows.append(f"| {dataset} | {metric} | {value:.4f} | {shown} |")
    return rows


def _checks_table(verdict: GateVerdict) -> list[str]:
    rows = ["| guardrail | verdict | numbers |", "|---|---|---|"]
    for check in verdict.checks:
        state = "pass" if check.passed else "FAIL"
        if check.passed and check.near_miss:
            state = "pass (near miss)"
        numbers = ", ".join(f"{k}={v:.4g}" for k, v in check.numbers.items())
        rows.append(f"| {check.name} | {state} | {numbers} |")
    for regression in verdict.regressions:
        rows.append(f"| improvement | FAIL | {regression} |")
    return rows


def _approval_help(view: LoopView) -> list[str]:
    record = view.record
    payload = json.dumps({"reviewer": "YOUR-NAME", "comment": "why"})
    return [
        f"**Waiting for approval**: {'; '.join(record.approval.reasons)}",
        "",
        f"- `retrain approve {record.model} --loop {record.loop_number} --reviewer YOUR-NAME "
        '--comment "why"` (or `retrain reject ...`)',
        f"- `temporal workflow signal --workflow-id {record.loop_id} --name approve "
        f"--input '{payload}'`",
        "- or here: **Update** `approve` / `reject` with the same JSON",
    ]
