"""Small helpers shared by the workflow tests."""

from __future__ import annotations

import asyncio
import importlib.util
import random
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from starters.api.coordinators import Coordinators
from workflows.coordinator.models import CoordinatorStatus, Decision
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.triggers import TriggerEvent
from workflows.coordinator.workflow import ModelCoordinator
from workflows.loop.models import RetrainingLoopInput

T = TypeVar("T")

# Short enough for real time on the dev server, long enough to observe the deferral first.
FAST_POLICY = TriggerPolicy(
    batch_size=5,
    batch_window=timedelta(seconds=1),
    max_wait=timedelta(seconds=5),
    cooldown=timedelta(seconds=2),
    max_daily_trainings=50,
    daily_budget=1000,
)


REPOSITORY = Path(__file__).resolve().parents[2]


def load_script(relative: str) -> ModuleType:
    """A script of the repository that is no package's module (ops/image/slim.py, run by the
    image's builder), loaded by path."""
    path = REPOSITORY / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def restartable_port() -> int:
    """A free loopback port below the kernel's ephemeral range, for a server a test stops and
    starts again on the same port. A port from that range (what binding port 0 returns) can be
    taken by any process's outgoing connection while the server is down, and the restarted
    server then fails with "address already in use"."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    chooser = random.SystemRandom()
    for _ in range(100):
        port = chooser.randrange(10_000, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between 10000 and {low}")


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 30, what: str = "condition"
) -> T:
    """Poll until `check` returns a truthy value (AssertionError counts as not yet)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: BaseException | None = None
    while loop.time() < deadline:
        try:
            value = await check()
            if value:
                return value
        except AssertionError as err:
            last = err
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}") from last


# One `env.sleep` is one RPC, cut at 30 s of wall time by the SDK core's default call timeout;
# skipping days of timers on a busy machine can take longer, so long skips go in steps.
SKIP_STEP = timedelta(hours=6)


async def skip_time(env: WorkflowEnvironment, duration: timedelta) -> None:
    """Advance the time-skipping server by `duration`, in steps of at most `SKIP_STEP`."""
    while duration > timedelta(0):
        step = min(duration, SKIP_STEP)
        await env.sleep(step)
        duration -= step


class CoordinatorProbe:
    """Drives one model's coordinator in a test (start without update-with-start, which the
    time-skipping server lacks)."""

    def __init__(self, client: Client, task_queue: str, model: str) -> None:
        self.client = client
        self.model = model
        self.coordinators = Coordinators(client, task_queue, models=None)

    async def start(
        self, policy: TriggerPolicy = FAST_POLICY
    ) -> WorkflowHandle[ModelCoordinator, None]:
        await self.coordinators.start(self.model, policy)
        return self.handle

    @property
    def handle(self) -> WorkflowHandle[ModelCoordinator, None]:
        return self.coordinators.handle(self.model)

    async def submit(self, event: TriggerEvent) -> Decision:
        return await self.handle.execute_update(ModelCoordinator.submit_trigger, event)

    async def status(self) -> CoordinatorStatus:
        return await self.coordinators.status(self.model)

    async def decisions(self, limit: int = 200) -> list[Decision]:
        return await self.coordinators.decisions(self.model, limit)

    async def wait_status(
        self, predicate: Callable[[CoordinatorStatus], bool], what: str, timeout: float = 30
    ) -> CoordinatorStatus:
        async def check() -> CoordinatorStatus | None:
            status = await self.status()
            return status if predicate(status) else None

        return await eventually(check, timeout=timeout, what=what)

    async def loop_input(self, loop_id: str) -> RetrainingLoopInput | None:
        """The input a loop was started with (None until the coordinator has started it)."""
        try:
            history = await self.client.get_workflow_handle(loop_id).fetch_history()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return None
            raise
        started = history.events[0].workflow_execution_started_event_attributes
        [value] = await self.client.data_converter.decode(
            started.input.payloads, [RetrainingLoopInput]
        )
        assert isinstance(value, RetrainingLoopInput)
        return value

    async def started_loop(self, loop_id: str) -> RetrainingLoopInput:
        return await eventually(lambda: self.loop_input(loop_id), what=f"{loop_id} to start")

    async def task_failures(self) -> int:
        """Workflow task failures across the current run: must stay 0 whatever we send."""
        history = await self.handle.fetch_history()
        return sum(
            1 for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        )
