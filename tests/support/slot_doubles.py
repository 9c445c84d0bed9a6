"""Loops that take a training slot with exactly RetrainingLoop's code (`TrainingSlot`), whose
training is recorded by activities and, when the recorder says so, lasts until the test sends
`finish` (tests/slots/test_training_slots.py and tests/histories/record_slots.py).

The wait happens in the workflow, not in a blocked activity: the time-skipping server does not
skip time while an activity runs, and a terminated loop's running activity would hold it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowHandle

with workflow.unsafe.imports_passed_through():
    from workflows.common import names
    from workflows.common.models import StrictModel
    from workflows.coordinator.triggers import TriggerKind
    from workflows.loop.models import (
        EventRef,
        LoopResult,
        LoopStatus,
        RetrainingLoopInput,
        TriggerContext,
    )
    from workflows.slots.lease import TrainingSlot
    from workflows.slots.models import SLOT_GRANTED_SIGNAL, SlotWait


class TrainingMark(StrictModel):
    loop_id: str
    priority: int
    requested_at: datetime | None


def training_queue(task_queue: str) -> str:
    """The recording 'training backend' polls a task queue of its own."""
    return f"{task_queue}-training"


class _SlotLoopBase:
    """Both doubles' body and message handlers (the SDK finds handlers on base classes)."""

    def __init__(self, input: RetrainingLoopInput) -> None:
        self._input = input
        self._slot = TrainingSlot(input.model, input.trigger.priority)
        self._record: SlotWait | None = None
        self._finish = False

    async def _run(self) -> LoopResult:
        loop_id = workflow.info().workflow_id
        backend = training_queue(workflow.info().task_queue)
        async with self._slot.held(self._changed):
            hold: bool = await workflow.execute_activity(
                "training_started",
                TrainingMark(
                    loop_id=loop_id,
                    priority=self._input.trigger.priority,
                    requested_at=self._record.requested_at if self._record else None,
                ),
                result_type=bool,
                task_queue=backend,
                start_to_close_timeout=timedelta(minutes=1),
            )
            if hold:
                await workflow.wait_condition(lambda: self._finish)
            await workflow.execute_activity(
                "training_finished",
                loop_id,
                task_queue=backend,
                start_to_close_timeout=timedelta(minutes=1),
            )
        return LoopResult(
            loop_id=workflow.info().workflow_id, status=LoopStatus.PROMOTED, summary="trained"
        )

    def _changed(self, record: SlotWait) -> None:
        self._record = record

    @workflow.signal(name=SLOT_GRANTED_SIGNAL)
    def training_slot_granted(self, *payload: Any) -> None:
        self._slot.granted(payload)

    @workflow.signal
    def finish(self) -> None:
        self._finish = True

    @workflow.query
    def slot(self) -> SlotWait | None:
        return self._record


@workflow.defn(name=names.RETRAINING_LOOP_WORKFLOW)
class SlotLoop(_SlotLoopBase):
    """Started by real coordinators in place of the real loop."""

    @workflow.init
    def __init__(self, input: RetrainingLoopInput) -> None:
        super().__init__(input)

    @workflow.run
    async def run(self, input: RetrainingLoopInput) -> LoopResult:
        return await self._run()


@workflow.defn(name="SlotHolderLoop")
class SlotHolderLoop(_SlotLoopBase):
    """The same, under another name: holds a slot beside the real RetrainingLoop."""

    @workflow.init
    def __init__(self, input: RetrainingLoopInput) -> None:
        super().__init__(input)

    @workflow.run
    async def run(self, input: RetrainingLoopInput) -> LoopResult:
        return await self._run()


class TrainingRecorder:
    """The training backend: records who trains and how many at once; while `hold` is set,
    each training lasts until the test signals the loop `finish`."""

    def __init__(self, hold: bool = True) -> None:
        self.hold = hold
        self.active = 0
        self.max_active = 0
        self.started: list[TrainingMark] = []
        self.finished: list[str] = []

    @property
    def training(self) -> list[str]:
        """Loops training now, the earliest started first."""
        return [m.loop_id for m in self.started if m.loop_id not in self.finished]

    @property
    def activities(self) -> list[Callable[..., Any]]:
        return [self.training_started, self.training_finished]

    @activity.defn(name="training_started")
    async def training_started(self, mark: TrainingMark) -> bool:
        if mark.loop_id not in {m.loop_id for m in self.started}:  # retried: counted once
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.started.append(mark)
        return self.hold

    @activity.defn(name="training_finished")
    async def training_finished(self, loop_id: str) -> None:
        if loop_id not in self.finished:
            self.active -= 1
            self.finished.append(loop_id)


def trigger(priority: int = 3) -> TriggerContext:
    event = EventRef(
        event_id=f"slot-test-{priority}",
        kind=TriggerKind.MANUAL,
        priority=priority,
        source="test",
        received_at=datetime.now(UTC),
    )
    return TriggerContext(
        events=[event], priority=priority, kinds=[TriggerKind.MANUAL], origin="slot test"
    )


async def start_double(
    client: Client,
    task_queue: str,
    model: str,
    priority: int = 3,
    workflow_name: str = names.RETRAINING_LOOP_WORKFLOW,
) -> WorkflowHandle[Any, LoopResult]:
    return await client.start_workflow(
        workflow_name,
        RetrainingLoopInput(
            model=model,
            loop_number=1,
            coordinator_id=names.coordinator_id(model),
            trigger=trigger(priority),
            estimated_cost=1.0,
            policy_version=1,
        ),
        id=names.retraining_loop_id(model, 1),
        task_queue=task_queue,
        result_type=LoopResult,
    )
