"""A local HTTP fake of the Vertex AI, Cloud Storage and Cloud Monitoring REST APIs.

Google ships no fake of Vertex: the real SDK (REST transport, anonymous credentials) talks to
this Starlette app on 127.0.0.1. State lives in one `FakeState`; each concern adds its routes
(`tests/vertex_fake/<concern>.py` exposes `routes(state) -> list[Route]`):

- storage.py     GCS JSON API: buckets, objects (media upload, download, list, metadata)
- jobs.py        CustomJob and PipelineJob: created PENDING, then RUNNING, then SUCCEEDED or
                 FAILED as they are polled; long-running operations
- models.py      Model upload (versions, aliases), get, list
- endpoints.py   Endpoint create/get/list, deployModel/undeployModel, traffic_split that must
                 sum to 100
- monitoring.py  Cloud Monitoring timeSeries (write and list) and ModelDeploymentMonitoringJob
                 results
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from tests.support.aws_harness import free_port


@dataclass
class FakeState:
    """Everything the fake knows; handlers mutate it under `lock`."""

    project: str = "retrain-tests"
    location: str = "us-central1"
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Free-form per-concern tables: state.tables["customJobs"][name] = resource JSON.
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Hooks tests set: e.g. run a job's container locally when it is created.
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)
    # Faults tests inject: method+path prefix -> (HTTP status, message), consumed once each.
    faults: list[tuple[str, int, str]] = field(default_factory=list)

    def table(self, name: str) -> dict[str, Any]:
        return self.tables.setdefault(name, {})


RouteFactory = Callable[[FakeState], list[BaseRoute]]

_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def google_error(code: int, message: str) -> JSONResponse:
    """An error in Google's JSON shape, which google-api-core maps to its exception classes."""
    body = {"error": {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN")}}
    return JSONResponse(body, status_code=code)


class _Faults(BaseHTTPMiddleware):
    """Answer with an injected fault (`state.faults`: "METHOD /path-prefix"), once each."""

    def __init__(self, app: Any, state: FakeState) -> None:
        super().__init__(app)
        self.state = state

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        target = f"{request.method} {request.url.path}"
        with self.state.lock:
            for index, (prefix, code, message) in enumerate(self.state.faults):
                if target.startswith(prefix):
                    del self.state.faults[index]
                    return google_error(code, message)
        return await call_next(request)


def build_app(state: FakeState, factories: list[RouteFactory]) -> Starlette:
    routes: list[BaseRoute] = []
    for factory in factories:
        routes.extend(factory(state))
    return Starlette(routes=routes, middleware=[Middleware(_Faults, state=state)])


@dataclass
class RunningFake:
    state: FakeState
    url: str


def serve(state: FakeState, factories: list[RouteFactory]) -> Iterator[RunningFake]:
    """Run the fake in a background thread for the duration of the generator."""
    port = free_port()
    config = uvicorn.Config(
        build_app(state, factories),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        # Idle connections stay open as a cloud front end keeps them (minutes): uvicorn's 5 s
        # default closes them while a slow test's client is about to reuse one (reset by peer).
        timeout_keep_alive=300,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the Vertex fake did not start")
        time.sleep(0.02)
    try:
        yield RunningFake(state, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
