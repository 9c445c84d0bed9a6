"""The training slots' current details in the Temporal UI (markdown)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.slots.models import (
        SlotsStatus,
    )


SHOWN_WAITERS = 20


def render_slots(status: SlotsStatus) -> str:
    """The limiter's current details (markdown) in the Web UI."""
    lines = [
        f"**Training slots**: {status.in_use} of {status.limit} in use, "
        f"{len(status.waiting)} waiting",
        "",
    ]
    if status.holders:
        lines += ["| holder | model | priority | granted |", "|---|---|---|---|"]
        lines += [
            f"| `{h.loop_id}` | {h.model} | {h.priority} | {h.granted_at:%Y-%m-%d %H:%M:%S} |"
            for h in status.holders
        ]
        lines.append("")
    if status.waiting:
        lines += ["| next | loop | model | priority | asked |", "|---|---|---|---|---|"]
        lines += [
            f"| {i} | `{w.loop_id}` | {w.model} | {w.priority} | "
            f"{w.requested_at:%Y-%m-%d %H:%M:%S} |"
            for i, w in enumerate(status.waiting[:SHOWN_WAITERS], 1)
        ]
        if len(status.waiting) > SHOWN_WAITERS:
            lines.append(f"\n... and {len(status.waiting) - SHOWN_WAITERS} more")
        lines.append("")
    lines += [
        'Change the limit: **Update** `set_limit` `{"limit": 5, "by": "you"}` or '
        "`retrain slots set-limit 5`; everything: `retrain slots show`.",
    ]
    return "\n".join(lines)
