"""What chaos watches: the endpoint's weights (polled all along), its admin calls (through a
proxy that can hold one, so a worker can be killed while a traffic change or a capture flush is
in flight), and the executions' histories (task failures, who made progress when)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client
from temporalio.service import RPCError

from workflows.rollout.models import EndpointState


class WeightsPoller:
    """GET /admin/weights every `interval`: every answer must be a valid split."""

    def __init__(self, url: str, headers: dict[str, str], interval: float = 0.05) -> None:
        self.url = url
        self.headers = headers
        self.interval = interval
        self.polls = 0
        self.invalid: list[str] = []
        self.failures: Counter[str] = Counter()
        self.last: EndpointState | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=5, headers=self.headers) as http:
            while True:
                try:
                    answer = await http.get(f"{self.url}/admin/weights")
                except httpx.HTTPError as err:
                    self.failures[type(err).__name__] += 1
                else:
                    if answer.status_code != 200:
                        self.failures[str(answer.status_code)] += 1
                    else:
                        self._check(answer.content)
                await asyncio.sleep(self.interval)

    def _check(self, body: bytes) -> None:
        self.polls += 1
        try:
            state = EndpointState.model_validate_json(body)
        except ValidationError as err:
            self.invalid.append(f"unreadable: {err}")
            return
        problems = []
        if not state.weights and state.generation == 0:
            self.last = state  # nothing deployed yet: no split at all is the valid answer
            return
        if sum(state.weights.values()) != 100:
            problems.append(f"weights sum to {sum(state.weights.values())}")
        if any(weight < 0 for weight in state.weights.values()):
            problems.append("a negative weight")
        unknown = set(state.weights) - set(state.variants)
        if unknown:
            problems.append(f"weights name unloaded variants {sorted(unknown)}")
        if state.shadow is not None and state.weights.get(state.shadow, 0) > 0:
            problems.append(f"shadow {state.shadow} also takes live traffic")
        if self.last is not None and state.generation < self.last.generation:
            problems.append(f"generation went back {self.last.generation} -> {state.generation}")
        if problems:
            self.invalid.append(f"{state.model_dump_json()}: {'; '.join(problems)}")
        self.last = state


@dataclass
class Hold:
    """Hold the next admin call matching `method path` after it reached the endpoint: the
    change is applied, the worker never hears the answer (it is killed meanwhile)."""

    method: str
    path: str
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


class AdminProxy:
    """The workers reach the endpoint through this (the spec's endpoint_url is the proxy's):
    it forwards every call, and holds the answer of an armed call until released."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.hold: Hold | None = None
        self.calls: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        app = Starlette(
            routes=[Route("/{path:path}", self._forward, methods=["GET", "PUT", "POST"])]
        )
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def arm(self, method: str, path: str) -> Hold:
        """Called on the harness's loop; the proxy runs in its own thread and loop."""
        self.hold = Hold(method, path)
        self._loop = asyncio.get_running_loop()
        return self.hold

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        path = "/" + request.path_params["path"]
        self.calls[f"{request.method} {path}"] += 1
        try:
            async with httpx.AsyncClient(timeout=60) as http:
                answer = await http.request(
                    request.method,
                    f"{self.upstream}{path}",
                    content=body,
                    headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                )
        except httpx.HTTPError as err:  # the endpoint is down (killed): the caller retries
            message = f'{{"error": "endpoint unreachable: {type(err).__name__}"}}'
            return Response(message.encode(), 502, headers={"content-type": "application/json"})
        hold = self.hold
        if hold is not None and (hold.method, hold.path) == (request.method, path):
            self.hold = None
            assert self._loop is not None
            self._loop.call_soon_threadsafe(hold.reached.set)
            # Keep the answer back until released (the caller is killed meanwhile).
            while not hold.release.is_set():
                await asyncio.sleep(0.05)
            return Response(status_code=502, content=b'{"error": "held by chaos"}')
        return Response(
            answer.content, answer.status_code, headers={"content-type": "application/json"}
        )


async def task_failures(client: Client, workflow_id: str) -> list[str]:
    """Workflow task failures of every run of `workflow_id`, except the server's benign
    UNHANDLED_COMMAND (a continue-as-new racing new signals); timeouts (a killed worker's
    task) are not failures."""
    failures: list[str] = []
    run_id: str | None = None
    while True:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        try:
            history = await handle.fetch_history()
        except RPCError:
            return failures
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                attributes = event.workflow_task_failed_event_attributes
                cause = attributes.cause
                if cause != WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND:
                    name = WorkflowTaskFailedCause.Name(cause)
                    failures.append(f"{workflow_id}: {name}: {attributes.failure.message[:300]}")
        first = history.events[0].workflow_execution_started_event_attributes
        # Back through continue-as-new: the run this one continued.
        run_id = first.continued_execution_run_id or None
        if run_id is None:
            return failures


async def progress_after(
    client: Client,
    workflow_id: str,
    since: datetime,
    identity: str,
    activity_id: str | None,
) -> datetime | None:
    """When the execution first made progress on the worker `identity` after `since`: the
    interrupted activity running again (or done) there, else a workflow task completed there.
    None: not yet."""
    handle = client.get_workflow_handle(workflow_id)
    if activity_id is not None:
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            if pending.activity_id != activity_id:
                continue
            started = pending.last_started_time.ToDatetime().astimezone()
            if pending.last_worker_identity.startswith(identity) and started > since:
                return started
            return None
    history = await handle.fetch_history()
    for event in history.events:
        when = event.event_time.ToDatetime().astimezone()
        if when <= since:
            continue
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attributes = event.activity_task_completed_event_attributes
            if attributes.identity.startswith(identity):
                return when
        completed = event.workflow_task_completed_event_attributes
        if (
            event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
            and completed.identity.startswith(identity)
        ):
            return when
    return None


def wall(clock: Callable[[], float] = time.time) -> datetime:
    return datetime.fromtimestamp(clock()).astimezone()
