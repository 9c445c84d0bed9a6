"""Record the coordinator histories that tests/test_replay.py replays (`make histories`).

Run it again only when a workflow change is *meant* to be incompatible (then version the change
with `workflow.patched` instead, if executions may be running). The scenario touches every
handler and rule: triggers of each kind, a malformed signal, pause/resume, a policy change, a
loop that ends, a follow-up, and a continue-as-new (the dev server suggests it early here).
"""

from __future__ import annotations

import asyncio
import sysconfig
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starters.api.coordinators import Coordinators
from tests.support.loop_doubles import ControlledLoop, FinishLoop
from workers.search_attributes import dev_server_flags
from workers.worker import build_worker
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.triggers import DataArrival, DriftSignal, TriggerEvent, TriggerKind
from workflows.coordinator.workflow import ModelCoordinator
from workflows.loop.models import LoopStatus

HERE = Path(__file__).parent
SUGGEST_CONTINUE_AS_NEW_AT = 120


async def scenario(client: Client, task_queue: str, model: str) -> None:
    coordinators = Coordinators(client, task_queue, models=None)
    policy = TriggerPolicy(
        batch_size=3,
        batch_window=timedelta(seconds=1),
        max_wait=timedelta(seconds=3),
        cooldown=timedelta(seconds=1),
        daily_budget=100,
    )
    await coordinators.start(model, policy)

    async def submit(event: TriggerEvent) -> None:
        await coordinators.trigger(model, event)

    await submit(TriggerEvent(kind=TriggerKind.MANUAL, event_id="m1"))
    await submit(TriggerEvent(kind=TriggerKind.MANUAL, event_id="m1"))
    await submit(TriggerEvent(kind=TriggerKind.SCHEDULED, event_id="s1"))
    for i in range(4):
        await submit(
            TriggerEvent(
                kind=TriggerKind.DATA_ARRIVED,
                event_id=f"d{i}",
                data=DataArrival(uri=f"file://data/{i}.csv", rows=10),
            )
        )
    for event_id, score, priority in (("low", 0.01, 3), ("high", 0.4, 2), ("crit", 0.9, 3)):
        await submit(
            TriggerEvent(
                kind=TriggerKind.DRIFT,
                event_id=event_id,
                priority=priority,
                drift=DriftSignal(score=score),
            )
        )
    await submit(TriggerEvent(kind=TriggerKind.MANUAL, event_id="human", priority=1))
    handle = coordinators.handle(model)
    await handle.signal("trigger", {"kind": "bogus"})
    await coordinators.pause(model, reason="recording", by="recorder")
    await coordinators.resume(model, by="recorder")
    await coordinators.set_policy(model, {"cooldown": "0s"})
    await asyncio.sleep(2)
    status = await coordinators.status(model)
    assert status.active_loop
    await client.get_workflow_handle(status.active_loop).signal(
        ControlledLoop.finish, FinishLoop(status=LoopStatus.PROMOTED, actual_cost=0.5)
    )
    for i in range(40):  # push history past the suggestion: continue-as-new
        await handle.signal("trigger", {"kind": "scheduled", "event_id": f"bulk-{i}"})
    await asyncio.sleep(3)
    await handle.query(ModelCoordinator.status)


async def main() -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(scripts / "temporal"),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=[
            *dev_server_flags(),
            "--dynamic-config-value",
            f"limit.historyCount.suggestContinueAsNew={SUGGEST_CONTINUE_AS_NEW_AT}",
        ],
    ) as env:
        task_queue = f"record-{uuid.uuid4().hex[:8]}"
        model = "replayed"
        with tempfile.TemporaryDirectory() as home:
            worker = build_worker(
                env.client,
                home=Path(home),
                task_queue=task_queue,
                workflows=[ModelCoordinator, ControlledLoop],
            )
            async with worker:
                await scenario(env.client, task_queue, model)
        handle = env.client.get_workflow_handle(f"coordinator-{model}")
        run_id = (await handle.describe()).run_id
        # Walk back from the latest run: keep every run of the chain.
        histories = []
        async for execution in env.client.list_workflows(f"WorkflowId = '{handle.id}'"):
            history = await env.client.get_workflow_handle(
                handle.id, run_id=execution.run_id
            ).fetch_history()
            histories.append(history)
        assert any(
            h.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
            for h in histories
        ), "the scenario should continue-as-new at least once"
        for old in HERE.glob("coordinator-*.json"):
            old.unlink()
        for number, history in enumerate(reversed(histories), start=1):
            path = HERE / f"coordinator-run{number}.json"
            path.write_text(history.to_json())
            print(f"wrote {path.relative_to(HERE.parent.parent)} ({len(history.events)} events)")
        print(f"latest run {run_id}")


if __name__ == "__main__":
    asyncio.run(main())
