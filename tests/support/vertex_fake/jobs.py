"""The fake's CustomJob and PipelineJob routes (Vertex AI v1 REST).

A created job is PENDING; the first GET moves it to RUNNING, and a GET after its work has ended
moves it to SUCCEEDED or FAILED (with `error.message`). The work is the hook the test set:
`state.hooks["run_custom_job"](job_json)` / `["run_pipeline_job"](job_json)`, run in a thread
as the container would; it returns None on success or the failure text. Without a hook a job
just succeeds. list supports the filters our code uses (`labels.k="v"`, `display_name="x"`,
joined with AND); cancel moves a job to CANCELLED.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.support.vertex_fake.server import FakeState, google_error

CUSTOM = "customJobs"
PIPELINE = "pipelineJobs"
_STATES = {
    CUSTOM: (
        "JOB_STATE_PENDING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_SUCCEEDED",
        "JOB_STATE_FAILED",
        "JOB_STATE_CANCELLED",
    ),
    PIPELINE: (
        "PIPELINE_STATE_PENDING",
        "PIPELINE_STATE_RUNNING",
        "PIPELINE_STATE_SUCCEEDED",
        "PIPELINE_STATE_FAILED",
        "PIPELINE_STATE_CANCELLED",
    ),
}
_HOOKS = {CUSTOM: "run_custom_job", PIPELINE: "run_pipeline_job"}
_CLAUSE = re.compile(r'^\s*([\w.]+)\s*=\s*"?([^"]*)"?\s*$')
_ids = itertools.count(1000)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _Run:
    """A job's work in a thread: `outcome` is None while running, then ("ok"|"failed", text)."""

    def __init__(self, hook: Callable[[dict[str, Any]], str | None] | None, job: dict[str, Any]):
        self.outcome: tuple[str, str] | None = None if hook else ("ok", "")
        if hook is not None:
            threading.Thread(target=self._run, args=(hook, job), daemon=True).start()

    def _run(self, hook: Callable[[dict[str, Any]], str | None], job: dict[str, Any]) -> None:
        try:
            failure = hook(job)
        except Exception as error:  # the emulated container crashed
            failure = f"{type(error).__name__}: {error}"
        self.outcome = ("failed", failure) if failure else ("ok", "")


def matches(resource: dict[str, Any], filter_text: str) -> bool:
    """Our subset of Vertex list filters; anything else is refused (raises ValueError)."""
    for clause in re.split(r"\s+AND\s+", filter_text.strip(), flags=re.IGNORECASE):
        if not clause:
            continue
        found = _CLAUSE.match(clause)
        if found is None:
            raise ValueError(f"the fake does not understand the filter {clause!r}")
        field, value = found.groups()
        if field.startswith("labels."):
            actual = resource.get("labels", {}).get(field.removeprefix("labels."))
        elif field in ("display_name", "displayName"):
            actual = resource.get("displayName")
        else:
            raise ValueError(f"the fake cannot filter on {field!r}")
        if actual != value:
            return False
    return True


def routes(state: FakeState) -> list[BaseRoute]:
    runs: dict[str, _Run] = {}

    def advance(kind: str, job: dict[str, Any]) -> None:
        pending, running, succeeded, failed, _ = _STATES[kind]
        if job["state"] == pending:
            job["state"] = running
            job["startTime"] = _now()
            return
        outcome = runs[job["name"]].outcome
        if job["state"] == running and outcome is not None:
            job["state"] = succeeded if outcome[0] == "ok" else failed
            if outcome[0] != "ok":
                job["error"] = {"code": 3, "message": outcome[1]}
            job["endTime"] = job["updateTime"] = _now()

    async def collection(request: Request) -> Response:
        kind, parent = _kind(request), _parent(request)
        if request.method == "GET":
            try:
                with state.lock:
                    found = [
                        job
                        for job in state.table(kind).values()
                        if job["name"].startswith(parent + "/")
                        and matches(job, request.query_params.get("filter", ""))
                    ]
            except ValueError as error:
                return google_error(400, str(error))
            return JSONResponse({kind: found} if found else {})
        job = await request.json()
        job_id = request.query_params.get(
            "pipelineJobId" if kind == PIPELINE else "customJobId", str(next(_ids))
        )
        name = f"{parent}/{kind}/{job_id}"
        with state.lock:
            if name in state.table(kind):
                return google_error(409, f"{kind} {name} already exists")
            job.update(
                name=name,
                state=_STATES[kind][0],
                createTime=_now(),
                updateTime=_now(),
            )
            state.table(kind)[name] = job
            runs[name] = _Run(state.hooks.get(_HOOKS[kind]), dict(job))
            return JSONResponse(job)

    async def member(request: Request) -> Response:
        kind = _kind(request)
        job_id, _, verb = request.path_params["job"].partition(":")
        name = f"{_parent(request)}/{kind}/{job_id}"
        with state.lock:
            job = state.table(kind).get(name)
            if job is None:
                return google_error(404, f"{kind} {name} not found")
            if request.method == "POST" and verb == "cancel":
                if job["state"] not in _STATES[kind][2:]:
                    job["state"] = _STATES[kind][4]
                    job["error"] = {"code": 1, "message": "CANCELED"}
                    job["endTime"] = _now()
                return JSONResponse({})
            if request.method == "GET" and not verb:
                advance(kind, job)
                return JSONResponse(job)
        return google_error(400, f"unsupported {request.method} {verb}")

    found: list[BaseRoute] = []
    for kind in _STATES:
        base = f"/v1/projects/{{project}}/locations/{{location}}/{kind}"
        found.append(Route(base, collection, methods=["GET", "POST"]))
        found.append(Route(base + "/{job}", member, methods=["GET", "POST"]))
    return found


def _kind(request: Request) -> str:
    return CUSTOM if "/customJobs" in request.url.path else PIPELINE


def _parent(request: Request) -> str:
    return f"projects/{request.path_params['project']}/locations/{request.path_params['location']}"
