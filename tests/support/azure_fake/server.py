"""The Azure fake's core: state, ARM errors, auth and fault injection, long-running operations.

Requests arrive with the Host header of the Azure service they were meant for (the loopback
transport in `tests/support/azure_fake/client.py` keeps it), so routes are mounted per host:
`management.azure.com` for Azure Resource Manager (Azure ML, Azure Monitor), `<account>.blob.
core.windows.net` for Blob Storage, `<topic>.<region>-1.eventgrid.azure.net` for Event Grid.
Anything no route answers is recorded in `state.unhandled` and answered 404, so a probe can
assert that the fake understood every call the SDK made.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Host, Router

from tests.support.aws_harness import free_port

ARM_HOST = "management.azure.com"
TOKEN = "fake-arm-token"
_ids = itertools.count(1)


# ARM matches the fixed segments of a resource path case-insensitively (azure-mgmt-monitor
# sends `resourcegroups`); the fake's routes spell them one way.
_ARM_SEGMENTS = {
    segment.lower(): segment
    for segment in (
        "subscriptions", "resourceGroups", "providers", "locations",
        "Microsoft.MachineLearningServices", "Microsoft.Insights", "workspaces", "jobs",
        "models", "data", "versions", "datastores", "onlineEndpoints", "deployments",
        "autoscalesettings", "metrics", "mfeOperationsStatus", "mfeOperationResults",
    )
}  # fmt: skip


def canonical_arm_path(path: str) -> str:
    return "/".join(_ARM_SEGMENTS.get(part.lower(), part) for part in path.split("/"))


def now_text() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def system_data(previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """ARM's systemData: creation kept from `previous`, last modification now."""
    stamp = now_text()
    created = {
        key: value
        for key, value in (previous or {}).items()
        if key in ("createdAt", "createdBy", "createdByType")
    } or {"createdAt": stamp, "createdBy": "retrain-tests", "createdByType": "User"}
    return {
        **created,
        "lastModifiedAt": stamp,
        "lastModifiedBy": "retrain-tests",
        "lastModifiedByType": "User",
    }


def next_id() -> str:
    return f"{next(_ids):08d}-0000-4000-8000-000000000000"


@dataclass
class Fault:
    """An injected failure: the next `times` requests whose "METHOD /path" starts with
    `target` (and whose Host ends with `host`) get this status instead of an answer."""

    target: str
    status: int
    code: str
    message: str = "injected fault"
    retry_after: int | None = None
    times: int = 1
    host: str = ""


@dataclass
class FakeState:
    """Everything the fake knows; handlers mutate it under `lock`; tests read it directly."""

    subscription: str = "00000000-0000-0000-0000-000000000001"
    resource_group: str = "retrain-rg"
    workspace: str = "retrain-ws"
    location: str = "westeurope"
    storage_account: str = "retrainstore"
    # Datastore name -> blob container in `storage_account`.
    datastores: dict[str, str] = field(
        default_factory=lambda: {"workspaceblobstore": "azureml-blobstore-retrain"}
    )
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Per-concern tables: state.tables["jobs"][name] = resource JSON.
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Hooks tests set, e.g. hooks["run_job"](job_json) -> None | failure text.
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    # Bearer tokens the fake accepts; anything else is a 401 as from Microsoft Entra ID.
    tokens: set[str] = field(default_factory=lambda: {TOKEN})
    # Event Grid topic access keys the fake accepts in `aeg-sas-key`.
    eventgrid_keys: set[str] = field(default_factory=lambda: {"fake-topic-key"})
    # How many status polls a long-running operation answers InProgress before it ends, and
    # when it tells the poller to come back. ARM sends whole seconds in Retry-After (the SDK
    # deserializes it as an int) or nothing; by default the fake sends `retry-after-ms`, which
    # azure-core also honours, so pollers re-poll in milliseconds.
    lro_polls: int = 1
    lro_retry_after: int | None = None
    lro_retry_after_ms: int | None = 10
    # Every request as (method, host, path?query), and those no route answered.
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    unhandled: list[tuple[str, str, str]] = field(default_factory=list)

    def table(self, name: str) -> dict[str, Any]:
        return self.tables.setdefault(name, {})

    @property
    def workspace_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace}"
        )

    def calls(self, method: str, path_part: str) -> list[str]:
        """The recorded request targets of this method containing `path_part`."""
        with self.lock:
            return [t for m, _, t in self.requests if m == method and path_part in t]


RouteFactory = Callable[[FakeState], list[tuple[str, list[BaseRoute]]]]


def arm_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """ARM's error envelope, which azure-core maps to HttpResponseError's `error.code`."""
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


class _Gate(BaseHTTPMiddleware):
    """Record the request, check its bearer token, and answer injected faults."""

    def __init__(self, app: Any, state: FakeState) -> None:
        super().__init__(app)
        self.state = state

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        host = request.headers.get("host", "").split(":")[0]
        target = (
            f"{request.url.path}?{request.url.query}" if request.url.query else request.url.path
        )
        with self.state.lock:
            self.state.requests.append((request.method, host, target))
            for fault in self.state.faults:
                if f"{request.method} {request.url.path}".startswith(fault.target) and (
                    host.endswith(fault.host)
                ):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.state.faults.remove(fault)
                    return _fault_response(fault, host)
        if (denied := _authenticate(self.state, request, host)) is not None:
            return denied
        if host == ARM_HOST:
            request.scope["path"] = canonical_arm_path(request.scope["path"])
        response = await call_next(request)
        if response.status_code in (404, 405) and "x-fake-handled" not in response.headers:
            with self.state.lock:
                self.state.unhandled.append((request.method, host, target))
        return response


def _fault_response(fault: Fault, host: str) -> Response:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    if fault.status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if host.endswith(".blob.core.windows.net"):
        body = (
            '<?xml version="1.0" encoding="utf-8"?><Error>'
            f"<Code>{fault.code}</Code><Message>{fault.message}</Message></Error>"
        )
        headers["x-ms-error-code"] = fault.code
        return Response(body, fault.status, headers, media_type="application/xml")
    return arm_error(fault.status, fault.code, fault.message, headers)


def _authenticate(state: FakeState, request: Request, host: str) -> Response | None:
    if host.endswith(".api.azureml.ms") and request.url.path == "/discovery":
        return None  # workspace service discovery is anonymous
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if host.endswith(".eventgrid.azure.net") and "aeg-sas-key" in request.headers:
        if request.headers["aeg-sas-key"] in state.eventgrid_keys:
            return None
    elif scheme == "Bearer" and token in state.tokens:
        return None
    return arm_error(
        401,
        "InvalidAuthenticationToken",
        "The access token is missing or invalid.",
        {"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def handled(response: Response) -> Response:
    """Mark a 404 as the fake's answer (a missing resource), not an unknown route."""
    response.headers["x-fake-handled"] = "1"
    return response


def not_found(code: str, message: str) -> Response:
    return handled(arm_error(404, code, message))


def build_app(state: FakeState, factories: list[RouteFactory]) -> Starlette:
    by_host: dict[str, list[BaseRoute]] = {}
    for factory in factories:
        for host, host_routes in factory(state):
            by_host.setdefault(host, []).extend(host_routes)
    routes: list[BaseRoute] = [Host(host, app=Router(rs)) for host, rs in by_host.items()]
    return Starlette(routes=routes, middleware=[Middleware(_Gate, state=state)])


# --- long-running operations, as ARM runs them -------------------------------------------------


def start_operation(
    state: FakeState,
    request: Request,
    finish: Callable[[], dict[str, Any] | None],
) -> tuple[str, str]:
    """Register an operation that answers InProgress `state.lro_polls` times, then runs `finish`
    (which returns an error body, or None on success). Returns (Azure-AsyncOperation URL,
    Location URL) in the form Azure ML gives them."""
    operation = next_id()
    with state.lock:
        state.table("operations")[operation] = {
            "polls_left": state.lro_polls,
            "finish": finish,
            "status": "InProgress",
            "error": None,
            "started": now_text(),
        }
    base = (
        f"https://{ARM_HOST}/subscriptions/{request.path_params.get('sub', state.subscription)}"
        f"/providers/Microsoft.MachineLearningServices/locations/{state.location}"
    )
    api = request.query_params.get("api-version", "")
    return (
        f"{base}/mfeOperationsStatus/{operation}?api-version={api}",
        f"{base}/mfeOperationResults/{operation}?api-version={api}",
    )


def poll_headers(state: FakeState) -> dict[str, str]:
    headers = {}
    if state.lro_retry_after is not None:
        headers["Retry-After"] = str(state.lro_retry_after)
    if state.lro_retry_after_ms is not None:
        headers["retry-after-ms"] = str(state.lro_retry_after_ms)
    return headers


def lro_headers(state: FakeState, urls: tuple[str, str]) -> dict[str, str]:
    return {"Azure-AsyncOperation": urls[0], "Location": urls[1], **poll_headers(state)}


def _advance(state: FakeState, operation: dict[str, Any]) -> None:
    if operation["status"] != "InProgress":
        return
    if operation["polls_left"] > 0:
        operation["polls_left"] -= 1
        return
    failure = operation["finish"]()
    operation["status"] = "Failed" if failure else "Succeeded"
    operation["error"] = failure
    operation["ended"] = now_text()


def advance_pending(state: FakeState, urls: tuple[str, str] | None) -> None:
    """Advance the operation behind `urls` (from `start_operation`) by one step: reading the
    resource shows progress as on Azure, where an operation runs whether or not anyone polls
    it (a deployment started by one activity attempt is found finished by the next)."""
    if urls is None:
        return
    operation = state.table("operations").get(urls[0].split("?")[0].rsplit("/", 1)[-1])
    if operation is not None:
        _advance(state, operation)


def operation_routes(state: FakeState) -> list[tuple[str, list[BaseRoute]]]:
    from starlette.routing import Route

    async def status(request: Request) -> Response:
        with state.lock:
            operation = state.table("operations").get(request.path_params["op"])
            if operation is None:
                return not_found("NotFound", "no such operation")
            _advance(state, operation)
            body: dict[str, Any] = {
                "id": request.url.path,
                "name": request.path_params["op"],
                "status": operation["status"],
                "startTime": operation["started"],
            }
            if operation["error"]:
                body["error"] = operation["error"]
            if operation["status"] != "InProgress":
                body["endTime"] = operation["ended"]
        return JSONResponse(body, headers=poll_headers(state))

    async def result(request: Request) -> Response:
        with state.lock:
            operation = state.table("operations").get(request.path_params["op"])
            if operation is None:
                return not_found("NotFound", "no such operation")
            _advance(state, operation)
            if operation["status"] == "InProgress":
                return Response(status_code=202, headers=poll_headers(state))
            if operation["error"]:
                return arm_error(400, operation["error"]["code"], operation["error"]["message"])
        return Response(status_code=200)

    base = "/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/locations/{loc}"
    return [
        (
            ARM_HOST,
            [
                Route(base + "/mfeOperationsStatus/{op}", status, methods=["GET"]),
                Route(base + "/mfeOperationResults/{op}", result, methods=["GET"]),
            ],
        )
    ]


@dataclass
class RunningFake:
    state: FakeState
    url: str


def serve(state: FakeState, factories: list[RouteFactory]) -> Iterator[RunningFake]:
    """Run the fake on a loopback port in a background thread for the generator's lifetime."""
    port = free_port()
    config = uvicorn.Config(
        build_app(state, [operation_routes, *factories]),
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
            raise RuntimeError("the Azure fake did not start")
        time.sleep(0.02)
    try:
        yield RunningFake(state, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
