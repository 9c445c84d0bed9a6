"""A `RetrainingLoop` stand-in that completes at once, so a benchmark (and the storm tests) can
measure the coordinator's own cost without training anything."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.loop.models import LoopResult, LoopStatus, RetrainingLoopInput


@workflow.defn(name="RetrainingLoop")
class InstantLoop:
    """Completes at once; its input stays readable in its history."""

    @workflow.run
    async def run(self, input: RetrainingLoopInput) -> LoopResult:
        return LoopResult(
            loop_id=workflow.info().workflow_id,
            status=LoopStatus.PROMOTED,
            summary=f"answered {len(input.trigger.events)} events",
        )
