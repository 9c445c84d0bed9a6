"""The global limit of concurrent trainings: the `training-slots` workflow with loops that take
slots through RetrainingLoop's own code (tests/support/slot_doubles.py), 50 models triggering at
once through their real coordinators, reclaiming a dead holder's slot, changing the limit, the real
RetrainingLoop waiting for a slot, continue-as-new, and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner

from activities.loop.audit import AuditStore
from starters.api.coordinators import Coordinators
from starters.api.slots import TrainingSlotsClient, TrainingSlotsNotRunning
from starters.cli.app import app as retrain
from tests.support.helpers import FAST_POLICY, eventually
from tests.support.loop_harness import register, start_loop, view, with_changes, write_dataset
from tests.support.server_clock import clock_ticking
from tests.support.slot_doubles import (
    SlotHolderLoop,
    SlotLoop,
    TrainingRecorder,
    start_double,
    training_queue,
)
from workers.worker import build_worker
from workflows.common import names
from workflows.coordinator.triggers import TriggerEvent, TriggerKind
from workflows.coordinator.workflow import ModelCoordinator
from workflows.drift.workflow import DriftMonitor
from workflows.loop.audit import LoopStage
from workflows.loop.models import LoopResult, LoopStatus
from workflows.loop.workflow import RetrainingLoop
from workflows.rollout.workflow import StagedRollout
from workflows.slots.models import SlotsStatus
from workflows.slots.workflow import TrainingSlots

NO_APPROVAL = {"loop": {"approval": {"first_deployment": False}}}


@pytest_asyncio.fixture
async def slots(
    env: WorkflowEnvironment, client: Client, task_queue: str
) -> AsyncIterator[TrainingSlotsClient]:
    """The limiter's client; the limiter is stopped afterwards, so later tests' loops (on the
    same server) find no limit. The idle limiter has no timer: a clock keeps the time-skipping
    server from jumping to its 10-year run timeout (tests/support/server_clock.py)."""
    limiter = TrainingSlotsClient(client, task_queue)
    async with clock_ticking(env, client):
        yield limiter
        # Never started, or closed already: nothing to stop.
        with contextlib.suppress(RPCError):
            await limiter.handle().terminate("test over")


@pytest.fixture
def recorder() -> TrainingRecorder:
    return TrainingRecorder()


@pytest.fixture
def training_worker(
    client: Client, task_queue: str, recorder: TrainingRecorder
) -> Callable[[], Worker]:
    return lambda: Worker(
        client, task_queue=training_queue(task_queue), activities=recorder.activities
    )


def models(count: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"slots-{run}-{i:02d}" for i in range(count)]


async def wait_status(
    slots: TrainingSlotsClient, check: Callable[[SlotsStatus], bool], what: str
) -> SlotsStatus:
    async def probe() -> SlotsStatus | None:
        status = await slots.status()
        return status if check(status) else None

    return await eventually(probe, timeout=60, what=what)


async def finish(client: Client, *loop_ids: str) -> None:
    """End these loops' trainings (each holds until told)."""
    for loop_id in loop_ids:
        await client.get_workflow_handle(loop_id).signal("finish")


async def holder_and_waiter(
    client: Client, task_queue: str, recorder: TrainingRecorder, slots: TrainingSlotsClient
) -> tuple[WorkflowHandle[Any, Any], WorkflowHandle[Any, Any]]:
    """Under a limit of 1: one loop training (until told to finish), a second one queued."""
    first, second = models(2)
    holder = await start_double(client, task_queue, first)
    await wait_started(recorder, 1)
    waiter = await start_double(client, task_queue, second)
    await wait_status(slots, lambda s: len(s.waiting) == 1, "the second loop to wait")
    return holder, waiter


async def wait_started(recorder: TrainingRecorder, count: int) -> None:
    async def probe() -> bool:
        return len(recorder.started) >= count

    await eventually(probe, timeout=30, what=f"{count} trainings to start")


@pytest.mark.slow
@pytest.mark.time_skipping_only
async def test_fifty_models_triggering_at_once_share_three_slots_in_priority_order(
    client: Client,
    task_queue: str,
    new_worker: Callable[..., Worker],
    training_worker: Callable[[], Worker],
    slots: TrainingSlotsClient,
    recorder: TrainingRecorder,
) -> None:
    fleet = models(50)
    priority = {model: i % 5 + 1 for i, model in enumerate(fleet)}
    loop_ids = [names.retraining_loop_id(model, 1) for model in fleet]
    await slots.ensure(3)
    coordinators = Coordinators(client, task_queue, models=None)
    async with new_worker(SlotLoop, TrainingSlots), training_worker():
        await asyncio.gather(*(coordinators.start(model, FAST_POLICY) for model in fleet))
        await asyncio.gather(
            *(
                coordinators.handle(model).signal(
                    ModelCoordinator.trigger,
                    TriggerEvent(
                        kind=TriggerKind.DRIFT if priority[model] < 3 else TriggerKind.MANUAL,
                        event_id=f"incident-{model}",
                        priority=priority[model],
                        drift={"score": 0.5, "severity": "medium"} if priority[model] < 3 else None,
                    ),
                )
                for model in fleet
            )
        )
        full = await wait_status(
            slots, lambda s: s.in_use == 3 and len(s.waiting) == 47, "3 holders and 47 waiting"
        )
        assert [w.priority for w in full.waiting] == sorted(w.priority for w in full.waiting)
        await wait_started(recorder, 3)
        # One training ends at a time: each freed slot goes to the best loop still waiting.
        for started in range(4, 51):
            await finish(client, recorder.training[0])
            await wait_started(recorder, started)
            assert recorder.active <= 3
        await finish(client, *recorder.training)
        results = await asyncio.gather(
            *(client.get_workflow_handle(i, result_type=LoopResult).result() for i in loop_ids)
        )
        final = await wait_status(
            slots, lambda s: s.in_use == 0 and s.released_total == 50, "every slot back"
        )

    assert {r.status for r in results} == {LoopStatus.PROMOTED}
    assert sorted(m.loop_id for m in recorder.started) == sorted(loop_ids)
    assert sorted(recorder.finished) == sorted(loop_ids)
    assert recorder.max_active == 3
    granted_in_turn = recorder.started[3:]
    keys = [(m.priority, m.requested_at, m.loop_id) for m in granted_in_turn]
    assert all(m.requested_at is not None for m in granted_in_turn)
    assert keys == sorted(keys)
    # The waiters the test saw are exactly those granted in turn, in that order.
    assert [m.loop_id for m in granted_in_turn] == [w.loop_id for w in full.waiting]
    assert final.waiting == [] and final.granted_total == 50 and final.reclaimed_total == 0
    # Every moment: holders never exceeded the limit (from the limiter's own event log).
    held = 0
    for event in final.events:
        held += {"granted": 1, "released": -1}.get(event.kind, 0)
        assert held <= 3


@pytest.mark.time_skipping_only
async def test_a_terminated_holders_slot_is_reclaimed(
    env: WorkflowEnvironment,
    client: Client,
    task_queue: str,
    new_worker: Callable[..., Worker],
    training_worker: Callable[[], Worker],
    slots: TrainingSlotsClient,
    recorder: TrainingRecorder,
) -> None:
    await slots.ensure(1)
    async with new_worker(SlotLoop, TrainingSlots), training_worker():
        holder, waiter = await holder_and_waiter(client, task_queue, recorder, slots)
        await holder.terminate("lost its worker for good")
        recorder.hold = False
        # Time moves on to the periodic check, which finds the holder gone.
        result = await waiter.result()
        status = await slots.status()

    assert result.status is LoopStatus.PROMOTED
    assert [m.loop_id for m in recorder.started] == [holder.id, waiter.id]
    assert status.reclaimed_total == 1 and status.in_use == 0
    reclaimed = [e for e in status.events if e.kind == "reclaimed"]
    assert [(e.loop_id, e.detail) for e in reclaimed] == [(holder.id, "the loop is terminated")]


async def test_raising_the_limit_lets_waiters_in_and_bad_limits_are_refused(
    client: Client,
    task_queue: str,
    new_worker: Callable[..., Worker],
    training_worker: Callable[[], Worker],
    slots: TrainingSlotsClient,
    recorder: TrainingRecorder,
) -> None:
    with pytest.raises(TrainingSlotsNotRunning, match="not limited"):
        await slots.status()
    first, second, third = models(3)
    await slots.ensure(1)
    async with new_worker(SlotLoop, TrainingSlots), training_worker():
        handles = [await start_double(client, task_queue, first, priority=3)]
        await wait_started(recorder, 1)
        handles.append(await start_double(client, task_queue, second, priority=4))
        handles.append(await start_double(client, task_queue, third, priority=1))
        waiting = await wait_status(slots, lambda s: len(s.waiting) == 2, "two waiters")
        assert [w.model for w in waiting.waiting] == [third, second]

        for bad in (0, 1001):
            with pytest.raises(ValueError, match=r"1\.\.1000"):
                await slots.set_limit(bad)
        for payload in ({"limit": 0}, {"limit": "many"}, {"limit": 2, "extra": True}, {}):
            with pytest.raises(WorkflowUpdateFailedError):
                await slots.handle().execute_update("set_limit", payload)

        raised = await slots.set_limit(3, by="ana", reason="incident over")
        assert raised.limit == 3 and raised.in_use == 3 and raised.waiting == []
        await wait_started(recorder, 3)
        assert recorder.active == 3
        # Idempotent start: an existing limiter keeps its holders.
        await slots.ensure(3)
        assert (await slots.status()).in_use == 3
        await finish(client, *recorder.training)
        results = [await h.result() for h in handles]
        final = await slots.status()

    assert {r.status for r in results} == {LoopStatus.PROMOTED}
    assert [e.detail for e in final.events if e.kind == "limit"] == ["1 -> 3 by ana"]


@pytest.mark.slow
@pytest.mark.time_skipping_only
async def test_a_real_retraining_loop_waits_for_its_slot_then_trains(
    env: WorkflowEnvironment,
    client: Client,
    task_queue: str,
    home: Path,
    training_worker: Callable[[], Worker],
    slots: TrainingSlotsClient,
    recorder: TrainingRecorder,
) -> None:
    today: date = (await env.get_current_time()).date()
    holder_model, model = models(2)
    register(home, with_changes(write_dataset(home, model, today), NO_APPROVAL))
    await slots.ensure(1)
    worker = build_worker(
        client,
        home=home,
        task_queue=task_queue,
        workflows=(
            ModelCoordinator,
            RetrainingLoop,
            StagedRollout,
            DriftMonitor,
            TrainingSlots,
            SlotHolderLoop,
        ),
    )
    async with worker, training_worker():
        holder = await start_double(
            client, task_queue, holder_model, workflow_name="SlotHolderLoop"
        )
        await wait_started(recorder, 1)
        handle = await start_loop(client, task_queue, model)

        async def waiting() -> bool:
            current = await view(handle)
            return current.stage is LoopStage.WAITING_FOR_SLOT

        await eventually(waiting, timeout=120, what="the loop to wait for a slot")
        described = await handle.describe()
        details = described.raw_description.workflow_extended_info
        assert details is not None
        status = await slots.status()
        assert [w.loop_id for w in status.waiting] == [handle.id]
        await finish(client, holder.id)
        result = await handle.result()
        await holder.result()
        final = await slots.status()

    assert result.status is LoopStatus.PROMOTED, result.summary
    audit = AuditStore(home).read(model, handle.id)
    assert audit is not None
    stages = [s.stage for s in audit.stages]
    assert stages[:4] == [
        LoopStage.STARTED,
        LoopStage.DATA_WINDOW,
        LoopStage.WAITING_FOR_SLOT,
        LoopStage.TRAINING,
    ]
    slot = audit.training_slot
    assert slot is not None and slot.limiter_id == names.TRAINING_SLOTS_ID
    assert slot.position == 1 and slot.limit == 1
    assert slot.granted_at is not None and slot.released_at is not None
    assert slot.waited_seconds is not None and slot.released_at >= slot.granted_at
    assert final.in_use == 0 and final.released_total == 2
    released = [e for e in final.events if e.kind == "released" and e.loop_id == handle.id]
    assert [e.detail for e in released] == ["trained"]


async def test_without_a_limiter_loops_train_at_once(
    client: Client,
    task_queue: str,
    new_worker: Callable[..., Worker],
    training_worker: Callable[[], Worker],
    recorder: TrainingRecorder,
) -> None:
    recorder.hold = False
    async with new_worker(SlotLoop), training_worker():
        handles = [await start_double(client, task_queue, m) for m in models(3)]
        results = [await h.result() for h in handles]
        slot = await handles[0].query(SlotLoop.slot)
    assert {r.status for r in results} == {LoopStatus.PROMOTED}
    assert slot is None  # no limiter: nothing was waited for, nothing recorded


@pytest.mark.time_skipping_only
async def test_cancelling_a_waiting_loop_takes_it_out_of_the_queue(
    client: Client,
    task_queue: str,
    new_worker: Callable[..., Worker],
    training_worker: Callable[[], Worker],
    slots: TrainingSlotsClient,
    recorder: TrainingRecorder,
) -> None:
    await slots.ensure(1)
    async with new_worker(SlotLoop, TrainingSlots), training_worker():
        holder, waiter = await holder_and_waiter(client, task_queue, recorder, slots)
        await waiter.cancel()
        status = await wait_status(slots, lambda s: not s.waiting, "the waiter to leave")
        await finish(client, holder.id)
        await holder.result()
    assert status.released_total == 1 and status.in_use == 1
    left = [e for e in status.events if e.loop_id == waiter.id and e.kind == "released"]
    assert [e.detail for e in left] == ["stopped waiting (cancelled)"]


@pytest.mark.dev_server_only
async def test_the_limiter_continues_as_new_with_its_holders_and_queue(
    client: Client,
    task_queue: str,
    new_worker: Callable[..., Worker],
    training_worker: Callable[[], Worker],
    slots: TrainingSlotsClient,
    recorder: TrainingRecorder,
) -> None:
    """The dev server suggests continue-as-new at 400 events (tests/conftest.py): loops that
    vanished before being told of their slot churn through the limiter until it does."""
    (model,) = models(1)
    await slots.ensure(2)
    async with new_worker(SlotLoop, TrainingSlots), training_worker():
        holder = await start_double(client, task_queue, model)
        await wait_started(recorder, 1)
        first_run = (await slots.handle().describe()).run_id
        for i in range(60):
            await slots.handle().signal(
                "request",
                {
                    "loop_id": f"retrain-vanished-{i}",
                    "model": "vanished",
                    "priority": 2,
                    "requested_at": "2026-01-01T00:00:00Z",
                },
            )
        await slots.handle().signal("request", {"loop_id": "no model"})  # malformed: ignored

        async def continued() -> SlotsStatus | None:
            described = await slots.handle().describe()
            status = await slots.status()
            done = status.reclaimed_total == 60 and status.ignored
            return status if described.run_id != first_run and done else None

        status = await eventually(continued, timeout=60, what="continue-as-new")
        assert [h.loop_id for h in status.holders] == [holder.id]
        assert status.granted_total == 61 and status.waiting == []
        assert "model" in status.ignored[0].reason
        history = await client.get_workflow_handle(
            names.TRAINING_SLOTS_ID, run_id=first_run
        ).fetch_history()
        assert history.events[-1].event_type == (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        )
        assert not any(
            e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history.events
        )
        await finish(client, holder.id)
        await holder.result()
        final = await wait_status(slots, lambda s: s.in_use == 0, "the holder's release")
    assert final.released_total == 1


@pytest.mark.slow
@pytest.mark.dev_server_only
async def test_cli_shows_the_queue_and_sets_the_limit(
    env: WorkflowEnvironment,
    client: Client,
    task_queue: str,
    new_worker: Callable[..., Worker],
    training_worker: Callable[[], Worker],
    slots: TrainingSlotsClient,
    recorder: TrainingRecorder,
) -> None:
    address = client.service_client.config.target_host
    runner = CliRunner()

    def cli(*args: str) -> Any:
        # In a thread: the CLI runs its own event loop while this one runs the worker.
        return asyncio.to_thread(runner.invoke, retrain, ["--address", address, "slots", *args])

    missing = await cli("show")
    assert missing.exit_code == 1 and "not limited" in missing.output
    first, second = models(2)
    await slots.ensure(1)
    async with new_worker(SlotLoop, TrainingSlots), training_worker():
        handles = [await start_double(client, task_queue, first)]
        await wait_started(recorder, 1)
        handles.append(await start_double(client, task_queue, second, priority=1))
        await wait_status(slots, lambda s: len(s.waiting) == 1, "a waiter")

        shown = await cli("show", "--json")
        assert shown.exit_code == 0, shown.output
        document = json.loads(shown.output)
        assert document["limit"] == 1 and document["in_use"] == 1
        assert [w["loop_id"] for w in document["waiting"]] == [handles[1].id]
        table = await cli("show")
        assert table.exit_code == 0 and "waiting, in grant order" in table.output
        assert "1 of 1 training slots in use, 1 waiting" in table.output

        refused = await cli("set-limit", "0")
        assert refused.exit_code == 2
        changed = await cli("set-limit", "2", "--by", "ana")
        assert changed.exit_code == 0, changed.output
        assert "limit set to 2: 2 in use, 0 waiting" in changed.output
        await wait_started(recorder, 2)
        await finish(client, *recorder.training)
        for handle in handles:
            await handle.result()
