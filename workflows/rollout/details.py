"""A rollout's current details in the Temporal UI (markdown): step, weights, every verdict."""

from __future__ import annotations

from workflows.rollout.models import CanaryVerdict, RolloutView


def render_rollout_details(view: RolloutView) -> str:
    state = " (paused)" if view.paused else ""
    lines = [f"**rollout** `{view.rollout_id}`: {view.step.value}{state}", ""]
    split = ", ".join(f"{variant} {weight}%" for variant, weight in sorted(view.weights.items()))
    lines.append(f"- traffic: {split or 'not set yet'}")
    if view.shadow:
        lines.append(f"- shadow: {view.shadow} (mirrored, never answers)")
    if view.stages:
        lines += ["", "| stage | generation | bakes | verdict |", "|---|---|---|---|"]
        for stage in view.stages:
            outcome = stage.verdicts[-1].outcome.value if stage.verdicts else "-"
            lines.append(f"| {stage.label} | {stage.generation} | {stage.bakes} | {outcome} |")
    latest = next((s.verdicts[-1] for s in reversed(view.stages) if s.verdicts), None)
    if latest is not None:
        lines += ["", *_verdict_lines(latest)]
    if view.held:
        lines += [
            "",
            "**Held for a human**: send `approve` (continue), `promote` (skip to 100%) or "
            '`abort` (roll back) with `{"operator": "you", "reason": "..."}`',
        ]
    for command in view.commands[-5:]:
        refused = f" (refused: {command.refused})" if command.refused else ""
        lines.append(f"- {command.verb} by {command.operator} via {command.via}{refused}")
    if view.result:
        lines += ["", f"**Outcome: {view.result.status.value}**: {view.result.summary}"]
    return "\n".join(lines)


def _verdict_lines(verdict: CanaryVerdict) -> list[str]:
    rows = [f"latest verdict: **{verdict.outcome.value}**", "", "| check | outcome | reason |"]
    rows.append("|---|---|---|")
    rows += [f"| {c.name.value} | {c.outcome.value} | {c.reason} |" for c in verdict.checks]
    return rows
