"""Delivery behind the gateway: nothing is lost while Temporal is down (dead letters, replayed
cleanly), across restarts (pending events), or in a burst of 10,000 events (batched signals)."""

from __future__ import annotations

import asyncio
import functools
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import GrpcStatus
from temporalio.api.enums.v1 import EventType
from temporalio.api.errordetails.v1 import WorkflowNotReadyFailure
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from starters.api.coordinators import CoordinatorNotFound, Coordinators
from starters.gateway.database import database_path, open_database
from starters.gateway.delivery import DeliveryPolicy, classify
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
from tests.support.loop_doubles import ControlledLoop, FinishLoop
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


class Outage:
    """A connection that fails while Temporal is "down", then reaches the test's server."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.down = True
        self.attempts = 0

    async def __call__(self) -> Client:
        self.attempts += 1
        if self.down:
            return await temporal_down()()
        return self.client


@pytest.mark.time_skipping_only
async def test_events_wait_out_a_temporal_outage_and_arrive_once(
    home, client, task_queue, model, new_worker
):
    """While Temporal cannot be reached, events stay pending and are retried with backoff for
    as long as it takes (never dead-lettered for it); once it is back, each arrives once."""
    register_sagemaker_model(home, model, LABELLED)
    outage = Outage(client)
    async with new_worker(ControlledLoop), gateway(home, outage, task_queue) as gw:
        ids = await _send(gw, 3)

        async def retried() -> bool:
            waiting, dead = stored(home)
            return not dead and len(waiting) == 3 and min(p.attempts for p in waiting) >= 3

        await eventually(retried, what="several failed attempts per event")
        waiting, _ = stored(home)
        assert all((p.last_error or "").startswith("Temporal unreachable") for p in waiting)
        assert all(p.next_attempt_at is not None for p in waiting)

        outage.down = False
        status = await eventually(
            lambda: _accepted(client, task_queue, model, 3), what="the events after the outage"
        )
        await eventually(lambda: _drained(home), what="the store to empty")
        metrics = (await gw.http.get("/metrics")).text
    assert status.events_received == 3 and status.events_accepted == 3
    assert {i for d in status.recent_decisions for i in d.event_ids} == set(ids)
    postponed = gw.metric(
        metrics, "retrain_gateway_events_total", source="eventbridge", outcome="postponed"
    )
    assert postponed >= 9
    assert gw.metric(metrics, "retrain_dead_letters") == 0


async def _drained(home: Path) -> bool:
    return stored(home) == ([], [])


async def _accepted(client: Client, task_queue: str, model: str, count: int):
    try:
        status = await _status(client, task_queue, model)
    except (RPCError, CoordinatorNotFound):  # not started: the first delivery starts it
        return None
    return status if status.events_accepted >= count else None


async def _received(client: Client, task_queue: str, model: str, count: int):
    status = await _status(client, task_queue, model)
    return status if status.events_received >= count else None


@pytest.mark.time_skipping_only
async def test_pending_events_survive_a_restart(home, client, task_queue, model, new_worker):
    register_sagemaker_model(home, model, LABELLED)
    # Temporal is down and the gateway keeps retrying: the events stay pending until it stops.
    async with gateway(home, temporal_down(), task_queue) as gw:
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


async def _updates(client: Client, workflow_id: str) -> int:
    """Updates accepted by every run of a workflow (back through continue-as-new)."""
    total, run_id = 0, ""
    while True:
        history = await client.get_workflow_handle(
            workflow_id, run_id=run_id or None
        ).fetch_history()
        total += sum(
            1
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
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
async def test_a_burst_of_ten_thousand_events_arrives_whole_in_batched_updates(
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
        updates = [await _updates(client, f"coordinator-{name}") for name in models]
        metrics = (await gw.http.get("/metrics")).text
    assert stored(home) == ([], [])
    total = BURST_MODELS * BURST_PER_MODEL
    assert (
        gw.metric(
            metrics, "retrain_gateway_events_total", source="eventbridge", outcome="delivered"
        )
        == total
    )
    # Batched: each update carried many events (at most 200), never one update per event.
    assert sum(updates) >= total // policy.per_batch
    assert sum(updates) <= total // 10, updates


STORM_EVENTS = 3000
STORM_RECORDS = 100  # S3 notification records per request


def _records(first: int, count: int) -> dict[str, object]:
    """An S3 event notification of `count` new objects under the labelled prefix."""
    return {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "eventTime": "2026-11-12T00:00:00.000Z",
                "s3": {
                    "bucket": {"name": "churn-data"},
                    "object": {"key": f"labelled/storm-{i:05d}.parquet", "size": 10},
                },
            }
            for i in range(first, first + count)
        ]
    }


async def _nth_loop(client: Client, model: str, number: int) -> RetrainingLoopInput | None:
    try:
        return await client.get_workflow_handle(f"retrain-{model}-{number}").query(
            ControlledLoop.loop_input
        )
    except RPCError:  # not started yet
        return None


async def _postponed(gw: Gateway) -> float:
    metrics = (await gw.http.get("/metrics")).text
    return gw.metric(metrics, "retrain_gateway_events_total", source="s3", outcome="postponed")


@pytest.mark.time_skipping_only
async def test_a_storm_through_the_gateway_loses_and_doubles_nothing(
    home, client, task_queue, model, new_worker
):
    """3,000 data events while each loop runs until told to finish: the coordinator's backlog
    fills (1,000 events waiting for a loop) and it refuses the rest for now; the gateway keeps
    those, learns which they are from the verdicts, and sends exactly them again as loops end.
    Every event reaches exactly one loop, none is dead-lettered."""
    register_sagemaker_model(home, model, LABELLED)
    policy = TriggerPolicy(
        batch_size=100,
        batch_window=timedelta(hours=1),
        max_wait=timedelta(hours=2),
        cooldown=timedelta(0),
        max_daily_trainings=1000,
        daily_budget=1_000_000,
    )
    await Coordinators(client, task_queue, models=None).start(model, policy)
    async with new_worker(ControlledLoop), gateway(home, temporal_at(client), task_queue) as gw:
        answers = [
            await gw.post("s3", _records(first, STORM_RECORDS))
            for first in range(0, STORM_EVENTS, STORM_RECORDS)
        ]
        assert all(a.status_code == 202 for a in answers)
        sent = {e["event_id"] for a in answers for e in a.json()["events"]}
        assert len(sent) == STORM_EVENTS

        seen: list[str] = []
        number = 0
        while len(seen) < STORM_EVENTS:
            number += 1
            loop_input = await eventually(
                functools.partial(_nth_loop, client, model, number),
                timeout=120,
                what=f"loop {number} ({len(seen)} events in loops so far)",
            )
            seen.extend(e.event_id for e in loop_input.trigger.events)
            if number == 1:
                # The first loop runs until the backlog has filled and the gateway was told to
                # keep events for later: a busy machine delivers too slowly to fill it otherwise.
                await eventually(
                    functools.partial(_postponed, gw),
                    timeout=300,
                    what="the coordinator's backlog to fill (events postponed by the gateway)",
                )
            await client.get_workflow_handle(f"retrain-{model}-{number}").signal(
                ControlledLoop.finish, FinishLoop()
            )
        await eventually(lambda: _drained(home), what="the store to empty")
        status = await Coordinators(client, task_queue, models=None).status(model)
        metrics = (await gw.http.get("/metrics")).text
    assert len(seen) == len(set(seen)) == STORM_EVENTS, "an event reached two loops"
    assert set(seen) == sent
    assert status.events_accepted == STORM_EVENTS
    refused = [d for d in status.recent_decisions if d.reason is Reason.BACKLOG_FULL]
    postponed = gw.metric(metrics, "retrain_gateway_events_total", source="s3", outcome="postponed")
    # The backlog did fill: events were refused for now, kept and sent again.
    assert postponed > 0 and status.events_received > STORM_EVENTS, (postponed, refused)
    assert gw.metric(metrics, "retrain_dead_letters") == 0


def _rpc_error(status: RPCStatusCode, message: str, *details: Message) -> RPCError:
    grpc = GrpcStatus(code=status.value, message=message)
    for detail in details:
        grpc.details.add().Pack(detail)
    return RPCError(message, status, grpc.SerializeToString())


def test_an_update_refused_while_the_workflow_task_fails_is_sent_again() -> None:
    """Temporal's WorkflowNotReady (a coordinator's task failed while the update waited, seen
    when a worker's completion raced a server restart) keeps the events pending for another
    attempt; any other refusal dead-letters them with the reason."""
    not_ready = _rpc_error(
        RPCStatusCode.FAILED_PRECONDITION,
        "Unable to perform workflow execution update due to unexpected workflow task failure.",
        WorkflowNotReadyFailure(),
    )
    assert classify(not_ready).retryable
    assert not classify(_rpc_error(RPCStatusCode.FAILED_PRECONDITION, "not enabled")).retryable
    assert not classify(_rpc_error(RPCStatusCode.INVALID_ARGUMENT, "bad")).retryable
    assert classify(_rpc_error(RPCStatusCode.UNAVAILABLE, "down")).retryable
    # A status the SDK could not parse is judged by its code alone.
    garbled = RPCError("?", RPCStatusCode.FAILED_PRECONDITION, b"\xff\xff")
    assert not classify(garbled).retryable
