"""Delivery behind the gateway: nothing is lost while Temporal is down (dead letters, replayed
cleanly), across restarts (pending events), or in a burst of 10,000 events (batched signals)."""

from __future__ import annotations

import asyncio
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from starters.api.coordinators import Coordinators
from starters.gateway.database import database_path, open_database
from starters.gateway.delivery import DeliveryPolicy
from starters.gateway.replay import replay
from starters.gateway.routing import SpecRouter
from starters.gateway.temporal import TemporalLink
from tests.support.gateway_harness import (
    FAST,
    Gateway,
    gateway,
    object_created,
    register_sagemaker_model,
    stored,
    temporal_at,
    temporal_down,
)
from tests.support.helpers import eventually
from tests.support.loop_doubles import ControlledLoop
from workflows.coordinator.models import Reason
from workflows.coordinator.policy import TriggerPolicy
from workflows.loop.models import RetrainingLoopInput

LABELLED = "s3://churn-data/labelled"


async def _send(gw: Gateway, count: int, prefix: str = "e") -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(count)]
    for event_id in ids:
        event = object_created("churn-data", f"labelled/{event_id}.parquet", event_id)
        answer = await gw.post("eventbridge", event)
        assert answer.status_code == 202 and answer.json()["accepted"] == 1, answer.text
    return ids


async def _status(client: Client, task_queue: str, model: str):  # -> CoordinatorStatus
    return await Coordinators(client, task_queue, models=None).status(model)


async def _replay_all(home: Path, client: Client, task_queue: str):  # -> ReplayReport
    with closing(open_database(database_path(home))) as conn:
        link = TemporalLink(temporal_at(client), task_queue)
        return await replay(conn, link, SpecRouter(home), None, FAST)


@pytest.mark.time_skipping_only
async def test_temporal_down_dead_letters_then_replay_delivers_once(
    home, client, task_queue, model, new_worker
):
    register_sagemaker_model(home, model, LABELLED)
    async with gateway(home, temporal_down(), task_queue) as gw:
        ids = await _send(gw, 3)

        async def all_dead() -> bool:
            waiting, dead = stored(home)
            return not waiting and len(dead) == 3

        await eventually(all_dead, what="the events to be dead-lettered")
        metrics = (await gw.http.get("/metrics")).text
    _, dead = stored(home)
    assert {d.event_id for d in dead} == set(ids)
    for letter in dead:
        assert letter.model == model and letter.source == "eventbridge"
        assert letter.reason.startswith("Temporal unreachable: ")
        assert letter.attempts == FAST.attempts
        assert letter.first_failed_at == letter.last_failed_at
    assert gw.metric(metrics, "retrain_dead_letters") == 3
    assert gw.metric(metrics, "retrain_gateway_pending_events") == 0
    count = gw.metric(
        metrics, "retrain_gateway_events_total", source="eventbridge", outcome="accepted"
    )
    assert count == 3

    async with new_worker(ControlledLoop):
        report = await _replay_all(home, client, task_queue)
        assert sorted(report.delivered) == sorted(d.id for d in dead) and not report.failed
        assert stored(home) == ([], [])
        status = await eventually(
            lambda: _accepted(client, task_queue, model, 3), what="the replayed events"
        )
        assert status.events_accepted == 3

        # The same events dead-lettered again (a sender retried while Temporal was away) and
        # replayed again: the coordinator has seen them, nothing changes.
        async with gateway(home, temporal_down(), task_queue) as gw:
            await _send(gw, 3)
            await eventually(all_dead, what="the repeats to be dead-lettered")
        again = await _replay_all(home, client, task_queue)
        assert len(again.delivered) == 3 and stored(home) == ([], [])
        after = await eventually(
            lambda: _received(client, task_queue, model, 6), what="the repeats to arrive"
        )
        assert after.events_accepted == 3 and after.events_received == 6
        duplicates = [d for d in after.recent_decisions if d.reason is Reason.DUPLICATE_EVENT]
        assert {i for d in duplicates for i in d.event_ids} == set(ids)
        # Nothing left: a third replay has nothing to do.
        assert (await _replay_all(home, client, task_queue)).delivered == []


async def _accepted(client: Client, task_queue: str, model: str, count: int):
    status = await _status(client, task_queue, model)
    return status if status.events_accepted >= count else None


async def _received(client: Client, task_queue: str, model: str, count: int):
    status = await _status(client, task_queue, model)
    return status if status.events_received >= count else None


@pytest.mark.time_skipping_only
async def test_pending_events_survive_a_restart(home, client, task_queue, model, new_worker):
    register_sagemaker_model(home, model, LABELLED)
    # Temporal is down and the gateway keeps retrying: the events stay pending until it stops.
    patient = DeliveryPolicy(attempts=1000, backoff_seconds=0.05, max_backoff_seconds=0.05)
    async with gateway(home, temporal_down(), task_queue, policy=patient) as gw:
        ids = await _send(gw, 4)
    waiting, dead = stored(home)
    assert sorted(p.event_id or "" for p in waiting) == sorted(ids) and dead == []

    async with new_worker(ControlledLoop), gateway(home, temporal_at(client), task_queue):

        async def drained() -> bool:
            return stored(home) == ([], [])

        await eventually(drained, what="the pending events to be delivered after the restart")
        status = await eventually(
            lambda: _accepted(client, task_queue, model, 4), what="the events to arrive"
        )
    assert status.events_received == 4


BURST_MODELS = 10
BURST_PER_MODEL = 1000
# Every model's batch fires at its thousandth event: its first loop's input lists them all.
BURST_POLICY = TriggerPolicy(
    batch_size=BURST_PER_MODEL, batch_window=timedelta(hours=1), max_wait=timedelta(hours=2)
)


async def _signals(client: Client, workflow_id: str) -> int:
    """Signals received by every run of a workflow (back through continue-as-new)."""
    total, run_id = 0, ""
    while True:
        history = await client.get_workflow_handle(
            workflow_id, run_id=run_id or None
        ).fetch_history()
        total += sum(
            1
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        )
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id
        if not run_id:
            return total


async def _loop_input(client: Client, model: str) -> RetrainingLoopInput | None:
    handle = client.get_workflow_handle(f"retrain-{model}-1")
    try:
        return await handle.query(ControlledLoop.loop_input)
    except Exception:  # not started yet
        return None


@pytest.mark.slow
@pytest.mark.time_skipping_only
async def test_a_burst_of_ten_thousand_events_arrives_whole_in_batched_signals(
    home, client, task_queue, new_worker
):
    models = [f"burst-{i}" for i in range(BURST_MODELS)]
    coordinators = Coordinators(client, task_queue, models=None)
    for name in models:
        register_sagemaker_model(home, name, f"s3://burst-data/{name}")
        await coordinators.start(name, BURST_POLICY)
    requests = [
        (name, object_created("burst-data", f"{name}/part-{i:04d}.parquet", f"{name}-{i}"))
        for i in range(BURST_PER_MODEL)
        for name in models
    ]
    # The default policy: how long the deliverer lets a burst gather decides the batch sizes.
    policy = DeliveryPolicy()
    async with (
        new_worker(ControlledLoop),
        gateway(home, temporal_at(client), task_queue, policy=policy) as gw,
    ):

        async def sender(chunk: list[tuple[str, dict[str, object]]]) -> None:
            for name, event in chunk:
                answer = await gw.post("eventbridge", event)
                assert answer.status_code == 202 and answer.json()["events"][0]["model"] == name

        senders = 50
        await asyncio.gather(*(sender(requests[i::senders]) for i in range(senders)))

        for name in models:

            async def fired(name: str = name) -> RetrainingLoopInput | None:
                return await _loop_input(client, name)

            loop_input = await eventually(fired, timeout=120, what=f"{name}'s batch to fire")
            got = {event.event_id for event in loop_input.trigger.events}
            assert got == {f"{name}-{i}" for i in range(BURST_PER_MODEL)}
        signals = [await _signals(client, f"coordinator-{name}") for name in models]
        metrics = (await gw.http.get("/metrics")).text
    assert stored(home) == ([], [])
    total = BURST_MODELS * BURST_PER_MODEL
    assert (
        gw.metric(
            metrics, "retrain_gateway_events_total", source="eventbridge", outcome="delivered"
        )
        == total
    )
    # Batched: each signal carried many events (at most 200), never one signal per event.
    assert sum(signals) >= total // policy.per_signal
    assert sum(signals) <= total // 10, signals
