"""Kill and restart the parts of a staged rollout in tests: workers, the endpoint, in-flight calls.

- `WorkerPool`: `retrain worker` as separate OS processes (their output in log files); the
  current one is killed with SIGKILL, as a crashed container would be, and a new one started.
- `ServedEndpoint`: the real local endpoint (`serving.app.create_app`) under uvicorn in a thread,
  stopped and started again on the same home and the same port (bound with SO_REUSEADDR).
  Its app is wrapped in `HoldingMiddleware`: an armed `Hold` lets the endpoint handle the first
  request it matches, then keeps the answer back until the test releases it, so a test can kill
  the worker while the endpoint has applied a change the worker never heard about.
- `WeightsWatch`: polls `GET /admin/weights` in the background and keeps every report, to check
  that whatever happened the endpoint never reported an invalid split.
- `RolloutHistory`: what the rollout's event history says about its timers and activities
  (which attempt completed, on which worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

import httpx
import uvicorn
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError

from serving.app import create_app
from serving.config import EndpointConfig
from tests.support.endpoint_harness import ADMIN_HEADERS
from workflows.rollout.models import EndpointState, RolloutResult, RolloutView
from workflows.rollout.workflow import StagedRollout

RETRAIN = Path(sys.executable).parent / "retrain"
REPO = Path(__file__).resolve().parents[2]
# Generous: a loaded 2-core machine may take long to load the variants or start a worker.
STARTUP_SECONDS = 120.0
M = TypeVar("M", bound=BaseModel)

RolloutHandle = WorkflowHandle[StagedRollout, RolloutResult]


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll `check` until it returns True; fail with `what` after `timeout` seconds."""

    async def poll() -> None:
        while not await check():
            await asyncio.sleep(interval)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}") from None


# ---- workers ---------------------------------------------------------------------------------


class WorkerProcess:
    """One `retrain worker` OS process, its output in a log file."""

    def __init__(self, address: str, task_queue: str, home: Path, log: Path) -> None:
        self.log_path = log
        self._log: IO[bytes] = log.open("ab")
        # PYTHONPATH: this checkout's code, whatever the venv's editable install points at.
        env = {**os.environ, "RETRAIN_HOME": str(home), "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            [str(RETRAIN), "--address", address, "worker", "--task-queue", task_queue],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def identity_prefix(self) -> str:
        """Temporal identities of this process's client (the SDK default: `pid@host`)."""
        return f"{self.pid}@"

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        if not self._log.closed:
            self._log.close()

    def output(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


@dataclass
class WorkerPool:
    """The worker processes of one test: start one, SIGKILL the current one, start another."""

    address: str
    task_queue: str
    home: Path
    logs: Path
    processes: list[WorkerProcess] = field(default_factory=list)

    def start(self) -> WorkerProcess:
        log = self.logs / f"worker-{len(self.processes) + 1}.log"
        self.processes.append(WorkerProcess(self.address, self.task_queue, self.home, log))
        return self.processes[-1]

    @property
    def current(self) -> WorkerProcess:
        return self.processes[-1]

    def kill_current(self) -> WorkerProcess:
        worker = self.current
        if not worker.alive():
            raise AssertionError(f"worker {worker.pid} had already exited:\n{worker.output()}")
        worker.kill()
        return worker

    def kill_all(self) -> None:
        for worker in self.processes:
            worker.kill()

    def check_alive(self) -> None:
        if self.processes and not self.current.alive():
            raise AssertionError(f"the current worker exited:\n{self.current.output()}")

    def report(self) -> str:
        return "\n".join(
            f"--- worker {n} (pid {w.pid}):\n{w.output(2000)}"
            for n, w in enumerate(self.processes, 1)
        )


# ---- holding answers ---------------------------------------------------------------------------


class Hold:
    """Keeps back the answer to the first request with `method` `path` whose body satisfies
    `when` (after the endpoint handled it), until `release()`."""

    def __init__(self, method: str, path: str, when: Callable[[bytes], bool] | None) -> None:
        self.method = method
        self.path = path
        self._when = when
        self._lock = threading.Lock()
        self._claimed = False
        self._held = threading.Event()
        self._released = threading.Event()

    def wants(self, method: str, path: str) -> bool:
        return not self._claimed and method == self.method and path == self.path

    def claim(self, body: bytes) -> bool:
        """The first matching request takes the hold; every later one passes (thread-safe)."""
        with self._lock:
            if self._claimed or (self._when is not None and not self._when(body)):
                return False
            self._claimed = True
            return True

    @property
    def held(self) -> bool:
        """An answer is being kept back now (the endpoint has handled the request)."""
        return self._held.is_set() and not self._released.is_set()

    def release(self) -> None:
        self._released.set()

    async def keep(self, answer: list[Message], send: Send) -> None:
        """On the endpoint's loop: wait for the release, then send the answer kept back.
        The client may be gone by then (a killed worker): uvicorn drops the answer."""
        self._held.set()
        while not self._released.is_set():
            await asyncio.sleep(0.02)
        for message in answer:
            await send(message)

    async def wait_held(self, timeout: float, what: str, check: Callable[[], None]) -> None:
        """Until an answer is held; `check()` may raise to give up early (e.g. a dead worker)."""

        async def held() -> bool:
            check()
            return self.held

        await wait_until(held, timeout=timeout, what=what)


class HoldingMiddleware:
    """ASGI middleware: requests matching an armed `Hold` are handled, their answer kept back."""

    def __init__(self, app: ASGIApp, holds: list[Hold]) -> None:
        self.app = app
        self.holds = holds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not any(
            hold.wants(scope["method"], scope["path"]) for hold in self.holds
        ):
            await self.app(scope, receive, send)
            return
        # Read the body to decide, then replay it to the app.
        received: list[Message] = []
        body = b""
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        hold = next(
            (h for h in self.holds if h.wants(scope["method"], scope["path"]) and h.claim(body)),
            None,
        )
        if hold is None:
            await self.app(scope, replay, send)
            return
        answer: list[Message] = []

        async def keep(message: Message) -> None:
            answer.append(message)

        await self.app(scope, replay, keep)
        await hold.keep(answer, send)


# ---- the endpoint ------------------------------------------------------------------------------


class ServedEndpoint:
    """The local endpoint of `config`, served by uvicorn in a thread; `stop()` then `start()`
    restarts it on the same home and port, as a new process would (state read from disk)."""

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.port = 0
        self.holds: list[Hold] = []
        self.starts = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.port, "the endpoint has not been started"
        return f"http://127.0.0.1:{self.port}"

    def arm(self, method: str, path: str, when: Callable[[bytes], bool] | None = None) -> Hold:
        hold = Hold(method, path, when)
        self.holds.append(hold)
        return hold

    def start(self) -> None:
        """Blocking: build the app (reads the persisted state, loads variants), serve it."""
        assert self._server is None, "already running"
        app = HoldingMiddleware(create_app(self.config), self.holds)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # The same port again right after a stop, whatever connections linger in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
        )
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"endpoint-{self.port}-{self.starts}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        self.starts += 1
        deadline = time.monotonic() + STARTUP_SECONDS
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the endpoint stopped during startup (see the log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the endpoint did not start within {STARTUP_SECONDS}s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Blocking: release every hold, stop serving, run the lifespan shutdown (flush)."""
        for hold in self.holds:
            hold.release()
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=STARTUP_SECONDS)
        if thread.is_alive():
            raise RuntimeError(f"the endpoint on port {self.port} did not stop")

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.astop()


async def read_weights(url: str, timeout: float = 30) -> EndpointState:
    async with httpx.AsyncClient(timeout=timeout, headers=ADMIN_HEADERS) as http:
        response = await http.get(f"{url}/admin/weights")
        response.raise_for_status()
        return EndpointState.model_validate_json(response.content)


class WeightsWatch:
    """Polls `GET /admin/weights` every `interval` seconds until stopped; keeps every report.

    Failed polls (the endpoint restarting, a slow machine) are counted in `failures`, never
    taken for reports; a 200 whose body is not a valid EndpointState is a report problem.
    """

    def __init__(self, url: str, interval: float = 0.05) -> None:
        self.url = url
        self.interval = interval
        self.reports: list[EndpointState] = []
        self.malformed: list[str] = []
        self.failures: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        async with httpx.AsyncClient(timeout=10, headers=ADMIN_HEADERS) as http:
            while True:
                try:
                    response = await http.get(f"{self.url}/admin/weights")
                except httpx.HTTPError as err:
                    self.failures[type(err).__name__] += 1
                else:
                    if response.status_code != 200:
                        self.failures[str(response.status_code)] += 1
                    else:
                        try:
                            self.reports.append(EndpointState.model_validate_json(response.content))
                        except ValidationError as err:
                            self.malformed.append(f"{response.text[:300]}: {err}")
                await asyncio.sleep(self.interval)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._poll(), name="weights-watch")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def problems(self, allowed: list[dict[str, int]]) -> list[str]:
        """Every report that is not a valid split the rollout may set, or that contradicts an
        earlier one (a generation going back, or one generation with two splits)."""
        problems = list(self.malformed)
        splits: dict[int, dict[str, int]] = {}
        last_generation = 0
        for n, report in enumerate(self.reports):
            weights = report.weights
            where = f"report {n} (generation {report.generation}): {weights}"
            if sum(weights.values()) != 100 or any(not 0 < w <= 100 for w in weights.values()):
                problems.append(f"{where} is not a split of 100")
            if weights not in allowed:
                problems.append(f"{where} is none of the rollout's splits {allowed}")
            if report.shadow is not None:
                problems.append(f"{where} has a shadow {report.shadow}")
            if report.generation < last_generation:
                problems.append(f"{where} went back from generation {last_generation}")
            if splits.setdefault(report.generation, weights) != weights:
                problems.append(f"{where}: the same generation had {splits[report.generation]}")
            last_generation = max(last_generation, report.generation)
        return problems


# ---- the rollout -------------------------------------------------------------------------------


async def query_status(handle: RolloutHandle) -> RolloutView | None:
    """The rollout's status, or None while no worker answers (killed, still starting)."""
    try:
        return await handle.query(StagedRollout.status, rpc_timeout=timedelta(seconds=10))
    except (RPCError, WorkflowQueryFailedError):
        return None


@dataclass(frozen=True)
class ActivityRun:
    """One activity as the history tells it: its input, the attempt that completed (or last
    started) and the identity of the worker that completed it."""

    name: str
    input: Any
    scheduled_event_id: int
    attempt: int | None
    completed_by: str | None


class RolloutHistory:
    def __init__(self, client: Client, handle: RolloutHandle) -> None:
        self.client = client
        self.handle = handle

    async def events(self) -> list[HistoryEvent]:
        return list((await self.handle.fetch_history()).events)

    async def timer_pending(self) -> bool:
        """A durable timer (a bake) is running: started and neither fired nor cancelled."""
        started = ended = 0
        for event in await self.events():
            if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
                started += 1
            elif event.event_type in (
                EventType.EVENT_TYPE_TIMER_FIRED,
                EventType.EVENT_TYPE_TIMER_CANCELED,
            ):
                ended += 1
        return started > ended

    async def first_task_completed_after_timer(self, timer: int) -> str:
        """Identity of the worker that completed the first workflow task after the
        `timer`-th (from 0) timer fired: the worker that went on after that bake."""
        fired = -1
        for event in await self.events():
            if event.event_type == EventType.EVENT_TYPE_TIMER_FIRED:
                fired += 1
            elif (
                fired >= timer and event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
            ):
                return event.workflow_task_completed_event_attributes.identity
        raise AssertionError(f"no workflow task completed after timer {timer} fired")

    async def activities(self, name: str, input_type: type[M]) -> list[ActivityRun]:
        """Every `name` activity in scheduling order, its input decoded as `input_type`."""
        events = await self.events()
        converter = self.client.data_converter
        scheduled: dict[int, Any] = {}
        attempts: dict[int, int] = {}
        completed: dict[int, str] = {}
        for event in events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attributes = event.activity_task_scheduled_event_attributes
                if attributes.activity_type.name == name:
                    [value] = await converter.decode(attributes.input.payloads, [input_type])
                    scheduled[event.event_id] = value
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started = event.activity_task_started_event_attributes
                attempts[started.scheduled_event_id] = started.attempt
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                done = event.activity_task_completed_event_attributes
                completed[done.scheduled_event_id] = done.identity
        return [
            ActivityRun(name, value, event_id, attempts.get(event_id), completed.get(event_id))
            for event_id, value in scheduled.items()
        ]
