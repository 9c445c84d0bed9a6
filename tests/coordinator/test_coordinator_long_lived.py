"""A coordinator lives forever: continue-as-new, event storms, and months in seconds."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from tests.conftest import DEV_SERVER_SUGGEST_CONTINUE_AS_NEW, Servers
from tests.support.helpers import CoordinatorProbe
from tests.support.loop_doubles import ControlledLoop, FinishLoop, InstantLoop
from workers.worker import build_worker
from workflows.coordinator.models import MAX_PENDING_EVENTS, Action, Reason
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.triggers import DataArrival, DriftSignal, TriggerEvent, TriggerKind
from workflows.coordinator.workflow import ModelCoordinator
from workflows.loop.models import LoopStatus


@pytest.fixture
def probe(client: Client, task_queue: str, model: str) -> CoordinatorProbe:
    return CoordinatorProbe(client, task_queue, model)


def data_event(i: int) -> dict[str, object]:
    return TriggerEvent(
        kind=TriggerKind.DATA_ARRIVED,
        source="storm",
        event_id=f"data-{i}",
        data=DataArrival(uri=f"s3://lake/labelled/part-{i:05d}.parquet", rows=10),
    ).model_dump(mode="json", exclude_none=True)


async def send_all(
    client: Client, workflow_id: str, payloads: list[dict[str, object]], senders: int = 8
) -> None:
    """Signal every payload from a few concurrent senders (what busy pipelines look like).

    Unbounded fan-in is not what a single workflow is for: while a workflow task is in flight
    the server buffers at most 100 new events before force-failing the task, so a worker
    starved of CPU by a flood can fall behind for good."""
    handle = client.get_workflow_handle(workflow_id)
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    for payload in payloads:
        queue.put_nowait(payload)

    async def send(payload: dict[str, object]) -> None:
        # While a run closes for its continue-as-new the server refuses signals
        # (RESOURCE_EXHAUSTED, "workflow is closing"): a pipeline sends the event again.
        for attempt in itertools.count():
            try:
                await handle.signal("trigger", payload)
                return
            except RPCError as err:
                if err.status is not RPCStatusCode.RESOURCE_EXHAUSTED or attempt == 50:
                    raise
                await asyncio.sleep(0.2)

    async def sender() -> None:
        while not queue.empty():
            await send(queue.get_nowait())

    await asyncio.gather(*(sender() for _ in range(senders)))


async def run_ids(client: Client, workflow_id: str, first_run_id: str) -> list[str]:
    """Every run of a continue-as-new chain, oldest first."""
    chain = [first_run_id]
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=chain[-1]).fetch_history()
        last = history.events[-1]
        if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            return chain
        chain.append(last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id)


async def task_failures(client: Client, workflow_id: str, runs: list[str]) -> list[str]:
    """Workflow task failures other than the server's benign "new events arrived, try again"
    answer to a continue-as-new racing incoming signals (UNHANDLED_COMMAND)."""
    failures = []
    for run_id in runs:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        for event in history.events:
            if event.event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                continue
            attributes = event.workflow_task_failed_event_attributes
            if (
                attributes.cause
                != WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND
            ):
                cause = WorkflowTaskFailedCause.Name(attributes.cause)
                failures.append(f"{cause}: {attributes.failure.message}")
    return failures


STORM_POLICY = TriggerPolicy(
    batch_size=100,
    batch_window=timedelta(hours=1),
    max_wait=timedelta(hours=2),
    cooldown=timedelta(0),
    max_daily_trainings=1000,
    daily_budget=1_000_000,
)


@pytest.mark.dev_server_only
async def test_continue_as_new_carries_the_whole_state(probe, new_worker, client):
    """History grows past the (lowered) suggestion: the next run has every piece of state."""
    policy = STORM_POLICY.model_copy(update={"batch_size": 1000})
    async with new_worker(ControlledLoop):
        handle = await probe.start(policy)
        first_run = (await handle.describe()).run_id
        assert first_run
        started = await probe.submit(
            TriggerEvent(kind=TriggerKind.MANUAL, event_id="first", priority=2)
        )
        assert started.loop_id
        count = DEV_SERVER_SUGGEST_CONTINUE_AS_NEW + 50
        await send_all(client, handle.id, [data_event(i) for i in range(count)])
        status = await probe.wait_status(
            lambda s: s.events_accepted == count + 1, "all events accepted", timeout=60
        )
        runs = await run_ids(client, handle.id, first_run)
        assert len(runs) >= 2, "history passed the suggestion but no continue-as-new happened"

        # Carried: the pending batch, the active loop, counters, the decision sequence, dedup.
        assert status.batch is not None and status.batch.events == count
        assert status.active_loop == started.loop_id
        assert status.loops_started == 1
        duplicate = await probe.submit(TriggerEvent(kind=TriggerKind.MANUAL, event_id="first"))
        assert (duplicate.action, duplicate.reason) == (Action.IGNORE, Reason.DUPLICATE_EVENT)
        assert duplicate.seq == count + 2

        # The run that started the loop is gone; the new one still learns how it ended.
        await probe.started_loop(started.loop_id)
        await client.get_workflow_handle(started.loop_id).signal(
            ControlledLoop.finish, FinishLoop(status=LoopStatus.ROLLED_BACK)
        )
        closed = await probe.wait_status(lambda s: s.active_loop is None, "loop outcome")
        assert closed.last_outcome is not None
        assert closed.last_outcome.status is LoopStatus.ROLLED_BACK

        # The carried batch fires when the policy allows: every uri goes to the loop.
        await handle.execute_update(ModelCoordinator.set_policy, {"batch_size": 100})
        after = await probe.wait_status(lambda s: s.loops_started == 2, "batch start")
        assert after.active_loop
        loop_input = await probe.started_loop(after.active_loop)
        assert len(loop_input.trigger.data) == count
        runs = await run_ids(client, handle.id, first_run)
        assert await task_failures(client, handle.id, runs) == []


STORM = 10_000


async def storm(
    probe: CoordinatorProbe,
    client: Client,
    deliver: Callable[[list[dict[str, object]]], Awaitable[None]],
) -> tuple[list[str], int]:
    """Deliver 10,000 data events like an at-least-once sender that honours backpressure
    (`backlog_full`): send, then send again until every event was accepted (the dedup window
    turns the repeats into `duplicate_event`). Returns the coordinator's runs and the loops'
    events, after checking that each event reached exactly one loop.

    A refusal is never for good: it lasts while MAX_PENDING_EVENTS wait for a loop, and every
    round starts with none waiting, so each accepts at least that many more. How many rounds a
    blind resender needs depends on how many events the coordinator took before its backlog
    filled, i.e. on the machine's load (a fixed five rounds once fell 500 short); what is
    deterministic is that every round makes progress."""
    handle = await probe.start(STORM_POLICY)
    first_run = (await handle.describe()).run_id
    assert first_run
    payloads = [data_event(i) for i in range(STORM)]
    accepted = 0
    while accepted < STORM:
        await deliver(payloads)
        status = await probe.wait_status(
            lambda s: (
                s.events_received >= STORM
                and s.batch is None
                and s.follow_up is None
                and s.active_loop is None
            ),
            "the storm to settle",
            timeout=240,
        )
        assert status.events_accepted >= min(STORM, accepted + MAX_PENDING_EVENTS), (
            f"a round accepted {status.events_accepted - accepted} events after the backlog "
            "drained: something was refused for good"
        )
        accepted = status.events_accepted
    assert status.events_accepted == STORM
    assert 1 <= status.loops_started <= STORM // STORM_POLICY.batch_size

    seen: list[str] = []
    for number in range(1, status.loops_started + 1):
        loop_input = await probe.started_loop(f"retrain-{probe.model}-{number}")
        seen.extend(e.event_id for e in loop_input.trigger.events)
        assert len(loop_input.trigger.data) == len(loop_input.trigger.events)
    assert len(seen) == STORM, "an event reached two loops or none"
    assert set(seen) == {f"data-{i}" for i in range(STORM)}
    runs = await run_ids(client, handle.id, first_run)
    assert await task_failures(client, handle.id, runs) == []
    return runs, status.loops_started


async def history_bounds(client: Client, workflow_id: str, runs: list[str]) -> tuple[int, int, int]:
    """(events in all runs, events in the longest run, largest carried input in bytes)."""
    total = longest = largest_input = 0
    for run_id in runs:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        total += len(history.events)
        longest = max(longest, len(history.events))
        started = history.events[0].workflow_execution_started_event_attributes
        largest_input = max(largest_input, started.input.ByteSize())
    return total, longest, largest_input


@pytest.mark.slow
@pytest.mark.dev_server_only
async def test_ten_thousand_event_storm_loses_and_doubles_nothing(probe, new_worker, client):
    """10,000 data_arrived signals from 8 senders: every event in exactly one loop."""
    async with new_worker(InstantLoop):
        runs, _ = await storm(
            probe, client, lambda payloads: send_all(client, probe.handle.id, payloads)
        )
        assert len(runs) > 1
        _, longest, largest_input = await history_bounds(client, probe.handle.id, runs)
    # Bounded by continue-as-new. Under a flood a run overshoots the suggestion: each
    # continue-as-new that races new signals is refused and retried with them.
    assert longest < 10_240 // 2, "half the server's history warning limit"
    assert largest_input < 1024 * 1024, "carried state must stay far from the 2 MB limit"


@pytest.mark.dev_server_only
async def test_batched_storm_needs_a_fraction_of_the_history(probe, new_worker, client):
    """The same 10,000 events in batches of 200 through `submit_triggers`: the verdicts name
    the events refused for now (backlog full), and only those are sent again, so one delivery
    lands them all."""

    async def deliver(payloads: list[dict[str, object]]) -> None:
        events = [TriggerEvent.model_validate(p) for p in payloads]
        verdicts = await probe.coordinators.deliver_triggers(probe.model, events, per_update=200)
        assert not any(v.retry or v.error for v in verdicts)

    async with new_worker(InstantLoop):
        runs, loops = await storm(probe, client, deliver)
        total, longest, _ = await history_bounds(client, probe.handle.id, runs)
    # ~50 updates (a few more for the batches refused while the backlog was full) plus what
    # each loop costs (start, completion, search attributes, timers): under 100 history events
    # per 1,000 triggers, against ~1,000 with a signal per trigger.
    assert total < STORM / 10, f"{total} history events for {loops} loops"
    assert longest < DEV_SERVER_SUGGEST_CONTINUE_AS_NEW * 2


async def test_ninety_days_in_seconds(home):
    """90 days of a daily schedule, a noon retry and weekly low drift, on skipped time.

    Each day: 02:00 (New York) the schedule starts a loop; the 14:00 retry is deferred by the
    20 h cooldown to 22:00, where the daily limit of one training suppresses it.
    """
    # A server of its own: skipping time waits for every timer due on the server, and the
    # shared one holds other tests' workflows whose workers are gone.
    env = await Servers.start("time-skipping")
    task_queue, model = "ninety-days", "ninety"
    probe = CoordinatorProbe(env.client, task_queue, model)
    zone = ZoneInfo("America/New_York")
    policy = TriggerPolicy(
        cooldown=timedelta(hours=20),
        max_daily_trainings=1,
        timezone="America/New_York",
        daily_budget=100,
    )
    worker = build_worker(
        env.client, home=home, task_queue=task_queue, workflows=[ModelCoordinator, InstantLoop]
    )
    async with env, worker:
        now = (await env.get_current_time()).astimezone(zone)
        two_am = datetime.combine(now.date() + timedelta(days=1), time(2), tzinfo=zone)
        await env.sleep(two_am - now)
        await probe.start(policy)
        for day in range(90):
            await probe.handle.signal(
                "trigger", {"kind": "scheduled", "event_id": f"nightly-{day}", "source": "cron"}
            )
            await env.sleep(timedelta(hours=12))
            retry = {"kind": "manual", "event_id": f"noon-{day}", "source": "analyst"}
            await probe.handle.signal("trigger", retry)
            if day % 7 == 0:
                drift = TriggerEvent(
                    kind=TriggerKind.DRIFT, event_id=f"drift-{day}", drift=DriftSignal(score=0.05)
                )
                await probe.handle.signal("trigger", drift.model_dump(mode="json"))
            await env.sleep(timedelta(hours=12))
        status = await probe.status()
        decisions = await probe.decisions(200)
        assert await probe.task_failures() == 0

    assert status.loops_started == 90
    assert status.events_accepted == 90 * 2 + 13
    assert status.trainings_today == 1
    by_kind = Counter((d.action, d.reason, d.origin) for d in decisions)
    assert set(by_kind) <= {
        (Action.START, Reason.ELIGIBLE, "direct"),
        (Action.DEFER, Reason.COOLDOWN, "direct"),
        (Action.SUPPRESS, Reason.DAILY_LIMIT, "deferred"),
        (Action.IGNORE, Reason.DRIFT_LOW, "direct"),
    }
    starts = [d for d in decisions if d.action is Action.START]
    assert all(d.event_ids[0].startswith("nightly-") for d in starts)
    gaps = {b.at - a.at for a, b in itertools.pairwise(starts)}
    # Skipped time is exact; the test's own round trips add real milliseconds.
    assert all(abs(gap - timedelta(days=1)) < timedelta(minutes=1) for gap in gaps)
