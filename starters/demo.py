"""`make demo`: the embedded server, a worker, and a scripted day in a model's life.

Every kind of decision the coordinator takes shows up once: start, ignore (duplicate, low
drift, invalid signal), buffer and a batch that fires, defer (cooldown, loop active), escalate
(critical drift), suppress (review pending, paused, daily limit, budget), and a follow-up that
starts when the running loop closes.

The RetrainingLoop workflow itself is the next milestone: until a worker registers it, a started
loop waits in the task queue. The demo closes each loop it started by terminating it, which
is also how the coordinator learns an outcome it did not expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from temporalio.client import Client, WorkflowExecutionStatus

from starters import render
from starters.client import Coordinators
from starters.connection import connect
from starters.dev_server import DevServer, port_open, stop
from workers.coordinator_worker import build_worker
from workflows.coordinator_state import Decision
from workflows.names import coordinator_id
from workflows.policy import CostModel, TriggerPolicy
from workflows.triggers import AlarmSignal, DataArrival, DriftSignal, TriggerEvent, TriggerKind

MODEL = "demo-churn"
COOLDOWN = timedelta(seconds=6)
DEMO_POLICY = TriggerPolicy(
    batch_size=3,
    batch_window=timedelta(seconds=30),
    max_wait=timedelta(minutes=2),
    cooldown=COOLDOWN,
    max_daily_trainings=2,
    daily_budget=2.5,
    cost=CostModel(hourly_rate=1.0, base_hours=1.0),
)


@contextlib.asynccontextmanager
async def embedded_server(home: Path, console: Console) -> AsyncIterator[DevServer]:
    """Use a server already listening on 7233 (e.g. `retrain server`), else start one."""
    dev = DevServer(home=home)
    if port_open(dev.ip, dev.port):
        console.print(f"using the Temporal server already on {dev.address}")
        yield dev
        return
    process = dev.spawn(log_file=home / "demo-server.log")
    try:
        await asyncio.to_thread(dev.wait_ready, process)
        console.print(f"started the embedded Temporal dev server on {dev.address}")
        yield dev
    finally:
        stop(process)


async def reset_previous_run(client: Client) -> None:
    """A rerun starts from a clean coordinator: end the previous demo's open executions."""
    query = f"ModelName = '{MODEL}' AND ExecutionStatus = 'Running'"
    async for execution in client.list_workflows(query):
        await client.get_workflow_handle(execution.id).terminate(reason="demo restarted")


async def close_loop(client: Client, loop_id: str) -> None:
    handle = client.get_workflow_handle(loop_id)
    description = await handle.describe()
    if description.status is WorkflowExecutionStatus.RUNNING:
        await handle.terminate(reason="demo: the RetrainingLoop implementation lands next")


class Scenario:
    def __init__(self, client: Client, console: Console) -> None:
        self.client = client
        self.coordinators = Coordinators(client)
        self.console = console
        self.seen: list[Decision] = []

    def step(self, text: str) -> None:
        self.console.print(f"\n[bold]>> {text}[/]")

    async def send(self, event: TriggerEvent) -> Decision:
        decision = await self.coordinators.trigger(MODEL, event)
        self.console.print(render.decisions_table([decision], title=""))
        return decision

    async def wait_for(
        self, what: str, check: Callable[[], Awaitable[bool]], timeout: float = 60
    ) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await check():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"demo: timed out waiting for {what}")
            await asyncio.sleep(0.5)

    async def play(self) -> None:
        c = self.coordinators
        self.step(
            "policy: batches of 3, 6 s cooldown, 2 trainings/day, budget 2.50 USD at 1.00 each"
        )
        await c.start(MODEL, DEMO_POLICY)

        self.step("a data scientist asks for a retraining")
        first = await self.send(
            TriggerEvent(kind=TriggerKind.MANUAL, source="demo", event_id="manual-1")
        )
        self.step("the same request delivered twice (at-least-once senders): deduplicated")
        await self.send(TriggerEvent(kind=TriggerKind.MANUAL, source="demo", event_id="manual-1"))

        self.step("the nightly schedule fires inside the cooldown: deferred, not dropped")
        await self.send(
            TriggerEvent(kind=TriggerKind.SCHEDULED, source="cron", event_id="schedule-1")
        )

        self.step("three new data files arrive: buffered, then the batch fires")
        for i in range(3):
            await self.send(
                TriggerEvent(
                    kind=TriggerKind.DATA_ARRIVED,
                    source="s3",
                    event_id=f"data-{i}",
                    data=DataArrival(uri=f"file://data/labelled/day-{i}.parquet", rows=5000),
                )
            )

        self.step("drift: low is logged, high (priority 2) asks for approval and notifies")
        await self.send(
            TriggerEvent(
                kind=TriggerKind.DRIFT,
                source="monitor",
                event_id="drift-low-1",
                drift=DriftSignal(score=0.05, features=["tenure"]),
            )
        )
        await self.send(
            TriggerEvent(
                kind=TriggerKind.DRIFT,
                source="monitor",
                event_id="drift-high-1",
                priority=2,
                drift=DriftSignal(score=0.35, features=["monthly_charges"]),
            )
        )

        self.step("critical drift: automation stops and a human is asked to review")
        await self.send(
            TriggerEvent(
                kind=TriggerKind.DRIFT,
                source="monitor",
                event_id="drift-critical-1",
                drift=DriftSignal(
                    score=0.8, features=["contract_type", "tenure"], endpoint="churn-prod"
                ),
            )
        )
        await self.send(
            TriggerEvent(
                kind=TriggerKind.ALARM,
                source="cloudwatch",
                event_id="alarm-precision-1",
                alarm=AlarmSignal(name="churn-precision-drop"),
            )
        )
        self.step("the reviewer looked at it and asks for a retraining (it will need approval)")
        await self.send(
            TriggerEvent(kind=TriggerKind.MANUAL, source="reviewer", event_id="review-manual-1")
        )

        self.step("an operator pauses the coordinator; a trigger meanwhile is suppressed")
        await c.pause(MODEL, reason="feature store migration", by="demo")
        await self.send(
            TriggerEvent(kind=TriggerKind.SCHEDULED, source="cron", event_id="schedule-2")
        )
        await c.resume(MODEL, by="demo")

        self.step("someone types a malformed trigger into the UI's signal dialog")
        await c.handle(MODEL).signal("trigger", {"kind": "retrain-now", "priority": 9})
        await asyncio.sleep(0.5)

        self.step(
            f"the cooldown ends ({COOLDOWN.total_seconds():.0f} s): deferred work joins the "
            "follow-up"
        )
        await self.wait_for("the deferral", self._deferral_done)

        assert first.loop_id is not None
        self.step(f"{first.loop_id} closes: the follow-up loop starts, with approval required")
        await close_loop(self.client, first.loop_id)
        await self.wait_for("the follow-up", self._follow_up_started)

        self.step("two trainings today: the daily limit and then the budget say no")
        await asyncio.sleep(COOLDOWN.total_seconds())
        await self.send(
            TriggerEvent(kind=TriggerKind.SCHEDULED, source="cron", event_id="schedule-3")
        )
        await self.send(
            TriggerEvent(kind=TriggerKind.MANUAL, source="demo", event_id="manual-2", priority=2)
        )

    async def _deferral_done(self) -> bool:
        status = await self.coordinators.status(MODEL)
        return status.deferred is None and status.follow_up is not None

    async def _follow_up_started(self) -> bool:
        status = await self.coordinators.status(MODEL)
        return status.loops_started >= 2 and status.follow_up is None

    async def finish(self) -> None:
        """Pause (so nothing new starts) and close the loops the demo started."""
        await self.coordinators.pause(MODEL, reason="demo finished", by="demo")
        status = await self.coordinators.status(MODEL)
        if status.active_loop:
            await close_loop(self.client, status.active_loop)
        decisions = await self.coordinators.decisions(MODEL, limit=100)
        self.console.print()
        self.console.print(render.decisions_table(decisions, title="every decision, in order"))
        self.console.print(render.status_table(await self.coordinators.status(MODEL)))


async def run_demo(home: Path, *, keep_running: bool, console: Console) -> None:
    home.mkdir(parents=True, exist_ok=True)
    # Worker chatter (including the not-yet-registered RetrainingLoop) goes to a file.
    logging.basicConfig(
        filename=home / "demo-worker.log",
        level=logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    async with embedded_server(home, console) as dev:
        client = await connect(dev.address)
        await reset_previous_run(client)
        async with build_worker(client, home=home):
            scenario = Scenario(client, console)
            await scenario.play()
            await scenario.finish()
            outbox = sorted((home / "notifications").glob(f"{MODEL}-*.json"))
            console.print(
                f"\nnotifications for reviewers: {len(outbox)} in {home / 'notifications'}"
            )
            console.print(
                f"Web UI: {dev.ui_url}/namespaces/default/workflows/{coordinator_id(MODEL)}"
            )
            if keep_running:
                console.print("server and worker keep running; Ctrl-C to stop")
                await asyncio.Event().wait()
