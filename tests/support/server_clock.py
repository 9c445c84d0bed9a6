"""A ticking clock for the time-skipping server, for tests of workflows that idle without a
timer (the training-slots limiter waits for messages, with none).

The test server gives every run a 10-year timeout, and while a test waits for a result it skips
to the next timer anywhere on the server. When the only timer left is an idle workflow's run
timeout, that jump times it out: a limiter the test still queries is gone (`timed_out`). A
workflow re-arming a one-hour timer keeps every jump to an hour; it never runs on the dev
server, where time is real.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio import workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

TICK = timedelta(hours=1)
# A few hundred events per run: the history stays small however far a test skips.
TICKS_PER_RUN = 100


@workflow.defn(name="TestServerClock")
class ServerClock:
    # One parameter, like our workflows: a parameterless run here made mypy (2.4, from a fresh
    # cache) reject typed `get_workflow_handle_for` calls elsewhere in the suite.
    @workflow.run
    async def run(self, ticks_per_run: int) -> None:
        for _ in range(ticks_per_run):
            await workflow.sleep(TICK)
        workflow.continue_as_new(ticks_per_run)


@asynccontextmanager
async def clock_ticking(env: WorkflowEnvironment, client: Client) -> AsyncIterator[None]:
    """While inside, no time skip on `env` goes further than `TICK`."""
    if not env.supports_time_skipping:
        yield
        return
    queue = f"server-clock-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[ServerClock]):
        handle = await client.start_workflow(
            ServerClock.run, TICKS_PER_RUN, id=queue, task_queue=queue
        )
        try:
            yield
        finally:
            await handle.terminate("test over")
