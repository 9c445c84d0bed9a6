"""Record the histories of the global training limit that tests/test_replay.py replays: a real
RetrainingLoop that waited for a training slot (limit 1, held by a test double) and then
trained, and the `training-slots` workflow that served it.

    .venv/bin/python -m tests.histories.record_slots
"""

from __future__ import annotations

import asyncio
import sysconfig
import tempfile
import uuid
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from starters.api.slots import TrainingSlotsClient
from tests.support.helpers import eventually
from tests.support.loop_harness import register, start_loop, view, with_changes, write_dataset
from tests.support.slot_doubles import (
    SlotHolderLoop,
    TrainingRecorder,
    start_double,
    training_queue,
)
from workers.search_attributes import ensure_search_attributes
from workers.worker import build_worker
from workflows.coordinator.workflow import ModelCoordinator
from workflows.loop.audit import LoopStage
from workflows.loop.workflow import RetrainingLoop
from workflows.slots.workflow import TrainingSlots

HERE = Path(__file__).parent


async def record() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(Path(sysconfig.get_path("scripts")) / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        client = env.client
        await ensure_search_attributes(client)
        today = (await env.get_current_time()).date()
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            task_queue = f"record-{uuid.uuid4().hex[:8]}"
            model = "replay-slot"
            register(
                home,
                with_changes(
                    write_dataset(home, model, today),
                    {"loop": {"approval": {"first_deployment": False}}},
                ),
            )
            slots = TrainingSlotsClient(client, task_queue)
            await slots.ensure(1)
            recorder = TrainingRecorder()
            worker = build_worker(
                client,
                home=home,
                task_queue=task_queue,
                workflows=(ModelCoordinator, RetrainingLoop, TrainingSlots, SlotHolderLoop),
            )
            training = Worker(
                client, task_queue=training_queue(task_queue), activities=recorder.activities
            )
            async with worker, training:
                holder = await start_double(
                    client, task_queue, "replay-holder", workflow_name="SlotHolderLoop"
                )
                await eventually(lambda: _true(bool(recorder.started)), what="the holder")
                handle = await start_loop(client, task_queue, model)

                async def waiting() -> bool:
                    return (await view(handle)).stage is LoopStage.WAITING_FOR_SLOT

                await eventually(waiting, timeout=120, what="the loop to wait for its slot")
                await holder.signal("finish")
                result = await handle.result()
                print(f"loop ended {result.status.value}: {result.summary}")
                await holder.result()
                await slots.handle().terminate("recorded")
            histories = {
                "retraining-loop-slot-waited": await handle.fetch_history(),
                "training-slots-run1": await slots.handle().fetch_history(),
            }
            for name, history in histories.items():
                (HERE / f"{name}.json").write_text(history.to_json())
                print(f"recorded {name}.json ({len(history.events)} events)")
    finally:
        await env.shutdown()


async def _true(value: bool) -> bool:
    return value


if __name__ == "__main__":
    asyncio.run(record())
