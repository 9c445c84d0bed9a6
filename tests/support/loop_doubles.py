"""Test doubles registered under the `RetrainingLoop` name (`InstantLoop` lives in bench/)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from bench.instant_loop import InstantLoop

with workflow.unsafe.imports_passed_through():
    from workflows.common.models import StrictModel
    from workflows.loop.models import LoopResult, LoopStatus, RetrainingLoopInput


class FinishLoop(StrictModel):
    status: LoopStatus = LoopStatus.PROMOTED
    actual_cost: float | None = None


@workflow.defn(name="RetrainingLoop")
class ControlledLoop:
    """Runs until the test signals `finish`; exposes its input for assertions."""

    @workflow.init
    def __init__(self, input: RetrainingLoopInput) -> None:
        self._input = input
        self._finish: FinishLoop | None = None

    @workflow.run
    async def run(self, input: RetrainingLoopInput) -> LoopResult:
        await workflow.wait_condition(lambda: self._finish is not None)
        assert self._finish is not None
        return LoopResult(
            loop_id=workflow.info().workflow_id,
            status=self._finish.status,
            summary=f"double finished as {self._finish.status.value}",
            actual_cost=self._finish.actual_cost,
        )

    @workflow.signal
    def finish(self, request: FinishLoop) -> None:
        self._finish = request

    @workflow.query
    def loop_input(self) -> RetrainingLoopInput:
        return self._input


SIMULATED_CANDIDATE_LOSS = "simulated_candidate_loss"


@workflow.defn(name="RetrainingLoop")
class SimulatedLoop:
    """Ends at once, promoted, its candidate's loss given by the test's activity
    `simulated_candidate_loss(event id)` (none for a loop not started by an observation): the
    simulator's instant loop, as a workflow."""

    @workflow.run
    async def run(self, input: RetrainingLoopInput) -> LoopResult:
        event_id = input.trigger.events[0].event_id
        loss: float | None = None
        rows: int | None = None
        if event_id.startswith("obs-"):
            loss, rows = await workflow.execute_activity(
                SIMULATED_CANDIDATE_LOSS,
                event_id,
                result_type=tuple[float, int],
                start_to_close_timeout=timedelta(minutes=1),
            )
        return LoopResult(
            loop_id=workflow.info().workflow_id,
            status=LoopStatus.PROMOTED,
            summary="simulated",
            candidate_version=str(input.loop_number),
            candidate_loss=loss,
            candidate_loss_rows=rows,
        )


__all__ = ["ControlledLoop", "FinishLoop", "InstantLoop", "SimulatedLoop"]
