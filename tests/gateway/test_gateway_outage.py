"""The gateway across a real Temporal outage: its own dev server (SQLite), stopped while events
keep arriving, started again on the same file; every event reaches its coordinator exactly
once, nothing is dead-lettered.

The outage here lasts OUTAGE_SECONDS (the gateway retries with a backoff capped at
`max_backoff_seconds`); `make chaos` runs the same for ten minutes (bench/chaos)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client

from starters.api.connection import connect
from starters.api.coordinators import Coordinators
from starters.api.dev_server import DevServer
from starters.gateway.delivery import DeliveryPolicy
from tests.support.gateway_harness import (
    gateway,
    object_created,
    register_sagemaker_model,
    stored,
)
from tests.support.helpers import eventually, restartable_port
from tests.support.loop_doubles import ControlledLoop
from workers.worker import build_worker
from workflows.coordinator.models import CoordinatorStatus
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.workflow import ModelCoordinator

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 20.0
EVENTS_BEFORE, EVENTS_DURING = 20, 30
MODEL = "outage"
# What a deployed gateway does, with a shorter cap so the test ends soon after the outage.
PATIENT = DeliveryPolicy(backoff_seconds=0.5, max_backoff_seconds=3.0, rpc_timeout_seconds=10)


async def status(address: str) -> CoordinatorStatus | None:
    try:
        client = await connect(address)
        return await Coordinators(client, "outage", models=None).status(MODEL)
    except Exception:  # down, starting, or the coordinator not started yet
        return None


async def test_the_gateway_loses_nothing_across_a_temporal_outage(tmp_path: Path) -> None:
    home = tmp_path / "home"
    register_sagemaker_model(home, MODEL, "s3://outage-data/labelled")
    port, ui_port = restartable_port(), restartable_port()
    server = DevServer(home=tmp_path / "temporal", port=port, ui_port=ui_port)
    process = server.spawn(log_file=tmp_path / "server.log")
    await asyncio.to_thread(server.wait_ready, process)
    client: Client = await connect(server.address)
    policy = TriggerPolicy(batch_size=1000, batch_window=timedelta(hours=1))
    await Coordinators(client, "outage", models=None).start(MODEL, policy)
    worker = build_worker(
        client, home=home, task_queue="outage", workflows=[ModelCoordinator, ControlledLoop]
    )
    sent: list[str] = []
    try:
        async with worker, gateway(home, lambda: connect(server.address), "outage", PATIENT) as gw:

            async def post(prefix: str, count: int) -> None:
                for i in range(count):
                    event_id = f"{prefix}-{i}"
                    payload = object_created(
                        "outage-data", f"labelled/{event_id}.parquet", event_id
                    )
                    answer = await gw.post("eventbridge", payload)
                    assert answer.status_code == 202, answer.text
                    sent.append(event_id)

            await post("before", EVENTS_BEFORE)
            # The server goes away (a restart, an upgrade); events keep arriving.
            process.terminate()
            process.wait(30)
            stopped = time.monotonic()
            await post("during", EVENTS_DURING)
            _, dead = stored(home)
            assert not dead
            await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))

            async def retried_while_down() -> bool:
                # Waited for, not timed: on a busy machine a connect attempt alone can take
                # most of the outage's seconds.
                waiting, dead = stored(home)
                assert not dead, "an outage must never dead-letter an event"
                return bool(waiting) and max(p.attempts for p in waiting) >= 2

            await eventually(retried_while_down, timeout=300, what="a retry while down")
            # Back on the same SQLite file: every execution and every event is still there.
            process = server.spawn(log_file=tmp_path / "server.log")
            await asyncio.to_thread(server.wait_ready, process)

            async def delivered() -> CoordinatorStatus | None:
                found = await status(server.address)
                drained = stored(home) == ([], [])
                total = EVENTS_BEFORE + EVENTS_DURING
                return found if found and found.events_accepted >= total and drained else None

            final = await eventually(delivered, timeout=300, what="every event after the outage")
    finally:
        process.terminate()
        process.wait(30)
    assert final.events_accepted == len(sent) == len(set(sent))
    assert final.batch is not None and final.batch.events == len(sent)
