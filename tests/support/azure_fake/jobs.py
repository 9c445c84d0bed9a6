"""Azure ML jobs (command and pipeline) and the run history that holds their times and errors.

ARM (`management.azure.com`, `.../workspaces/{ws}/jobs`):
- PUT creates a job `NotStarted`; a PUT on an existing name succeeds only if it changes
  nothing but description, tags (merged: Azure never deletes a tag this way), displayName,
  properties (new keys only) and isArchived, else 400 UserError "A job with this name already
  exists", as Azure ML answers.
- GET moves the job one step per read: NotStarted -> Queued -> Running, then Completed or
  Failed once its work has ended. The work is `state.hooks["run_job"](job_json)` in a thread
  (None on success or the failure text); without a hook a job just completes.
- POST `/cancel` answers 202 with a Location to poll; the job goes CancelRequested, then
  Canceled.
- GET the collection filters on `tag` (a key) and `listViewType` (ActiveOnly skips archived).
Run history (`<region>.api.azureml.ms/history/v1.0/...`): GET `runs/{id}` and
`runs/{id}/details` answer status, startTimeUtc/endTimeUtc and, for a failed job, the error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.support.azure_fake.server import (
    ARM_HOST,
    FakeState,
    arm_error,
    lro_headers,
    not_found,
    now_text,
    start_operation,
)
from tests.support.azure_fake.workspace import WORKSPACES, api_host

JOBS = "jobs"
RUN_JOB = "run_job"
_MUTABLE = {"description", "tags", "displayName", "properties", "isArchived", "status", "services"}
TERMINAL = {"Completed", "Failed", "Canceled"}


class _Work:
    """A job's work in a thread: `outcome` is None while running, then (ok, failure text)."""

    def __init__(self, hook: Callable[[dict[str, Any]], str | None] | None, job: dict[str, Any]):
        self.outcome: tuple[bool, str] | None = None if hook else (True, "")
        if hook is not None:
            threading.Thread(target=self._run, args=(hook, job), daemon=True).start()

    def _run(self, hook: Callable[[dict[str, Any]], str | None], job: dict[str, Any]) -> None:
        try:
            failure = hook(job)
        except Exception as error:  # the emulated container crashed
            failure = f"{type(error).__name__}: {error}"
        self.outcome = (False, failure) if failure else (True, "")


def _strip(value: Any) -> Any:
    """The value without None members: the SDK sends explicit nulls that Azure ignores."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def advance(state: FakeState, job: dict[str, Any]) -> None:
    """One step of a job's life, taken each time it is read."""
    record = state.table("jobs.runs")[job["name"]]
    properties = job["properties"]
    status = properties["status"]
    if status == "NotStarted":
        properties["status"] = "Queued"
    elif status == "Queued":
        properties["status"] = "Running"
        record["startTimeUtc"] = now_text()
    elif status == "CancelRequested":
        properties["status"] = "Canceled"
        record["endTimeUtc"] = now_text()
    elif status == "Running" and record["work"].outcome is not None:
        ok, failure = record["work"].outcome
        properties["status"] = "Completed" if ok else "Failed"
        record["endTimeUtc"] = now_text()
        if not ok:
            record["error"] = {
                "code": "UserError",
                "message": failure,
                "messageFormat": "{Message}",
                "target": None,
            }
    job["systemData"]["lastModifiedAt"] = now_text()


def routes(state: FakeState) -> list[tuple[str, list[BaseRoute]]]:
    table = state.table(JOBS)

    def job_id(name: str) -> str:
        return f"{state.workspace_id}/jobs/{name}"

    async def collection(request: Request) -> Response:
        tag = request.query_params.get("tag")
        view = request.query_params.get("listViewType", "ActiveOnly")
        job_type = request.query_params.get("jobType")
        with state.lock:
            found = [
                job
                for job in table.values()
                if (tag is None or tag in (job["properties"].get("tags") or {}))
                and (
                    view == "All"
                    or bool(job["properties"].get("isArchived")) == (view == "ArchivedOnly")
                )
                and (job_type is None or job["properties"]["jobType"] == job_type)
            ]
        return JSONResponse({"value": found})

    async def member(request: Request) -> Response:
        name = request.path_params["name"]
        with state.lock:
            job = table.get(name)
            if request.method == "PUT":
                body = _strip(await request.json())
                return _put(name, job, body)
            if job is None:
                return not_found("UserError", f"Job {name} not found in workspace")
            if request.method == "DELETE":
                del table[name]
                return Response(status_code=200)
            advance(state, job)
            return JSONResponse(job)

    def _put(name: str, job: dict[str, Any] | None, body: dict[str, Any]) -> Response:
        properties = body.get("properties", {})
        if job is not None:
            record = state.table("jobs.runs")[name]
            fixed = {k: v for k, v in properties.items() if k not in _MUTABLE}
            if fixed != record["fixed"]:
                changed = sorted(
                    k
                    for k in set(fixed) | set(record["fixed"])
                    if fixed.get(k) != record["fixed"].get(k)
                )
                return arm_error(
                    400,
                    "UserError",
                    "A job with this name already exists. If you are trying to create a new job, "
                    "use a different name. If you are trying to update an existing job, the "
                    f"existing job's {', '.join(changed)} cannot be changed. Only description, "
                    "tags, displayName, properties, and isArchived can be updated.",
                )
            current = job["properties"]
            current["tags"] = {**(current.get("tags") or {}), **(properties.get("tags") or {})}
            old = current.get("properties") or {}
            new = properties.get("properties") or {}
            if any(k in old and old[k] != v for k, v in new.items()):
                return arm_error(400, "UserError", "Existing job properties cannot be modified.")
            current["properties"] = {**old, **new}
            for key in ("description", "displayName", "isArchived"):
                if key in properties:
                    current[key] = properties[key]
            job["systemData"]["lastModifiedAt"] = now_text()
            return JSONResponse(job, status_code=200)
        stamp = now_text()
        resource: dict[str, Any] = {
            "id": job_id(name),
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/jobs",
            "properties": {
                **properties,
                "status": "NotStarted",
                "services": {
                    "Studio": {
                        "jobServiceType": "Studio",
                        "endpoint": f"https://ml.azure.com/runs/{name}?wsid={state.workspace_id}",
                    }
                },
            },
            "systemData": {
                "createdAt": stamp,
                "createdBy": "retrain-tests",
                "createdByType": "User",
                "lastModifiedAt": stamp,
            },
        }
        resource["properties"].setdefault("experimentName", "Default")
        resource["properties"].setdefault("displayName", name)
        table[name] = resource
        state.table("jobs.runs")[name] = {
            "fixed": {k: v for k, v in properties.items() if k not in _MUTABLE},
            "work": _Work(state.hooks.get(RUN_JOB), _strip(dict(resource))),
            "createdUtc": stamp,
        }
        return JSONResponse(resource, status_code=201)

    async def cancel(request: Request) -> Response:
        name = request.path_params["name"]
        with state.lock:
            job = table.get(name)
            if job is None:
                return not_found("UserError", f"Job {name} not found in workspace")
            if job["properties"]["status"] not in TERMINAL:
                job["properties"]["status"] = "CancelRequested"
            urls = start_operation(state, request, lambda: None)
        return Response(status_code=202, headers=lro_headers(state, urls))

    async def run(request: Request) -> Response:
        name = request.path_params["run"]
        with state.lock:
            job = table.get(name)
            if job is None or request.path_params["ws"] != state.workspace:
                return not_found("UserError", f"Run {name} not found")
            record = state.table("jobs.runs")[name]
            body: dict[str, Any] = {
                "runId": name,
                "runUuid": f"{abs(hash(name)):032x}"[:32],
                "displayName": job["properties"].get("displayName"),
                "status": job["properties"]["status"],
                "createdUtc": record["createdUtc"],
                "startTimeUtc": record.get("startTimeUtc"),
                "endTimeUtc": record.get("endTimeUtc"),
                "tags": job["properties"].get("tags") or {},
                "properties": job["properties"].get("properties") or {},
                "runType": "azureml.StepRun"
                if job["properties"]["jobType"] != "Pipeline"
                else "azureml.PipelineRun",
                "target": (job["properties"].get("computeId") or "").rsplit("/", 1)[-1] or None,
                "experimentId": "22222222-3333-4444-8555-666666666666",
            }
            if "error" in record:
                body["error"] = {"error": record["error"]}
            if request.url.path.endswith("/details"):
                body["warnings"] = []
                body["services"] = {}
        return JSONResponse(body)

    job_base = WORKSPACES + "/{ws}/jobs"
    history = (
        "/history/v1.0/subscriptions/{sub}/resourceGroups/{rg}/providers"
        "/Microsoft.MachineLearningServices/workspaces/{ws}"
    )
    return [
        (
            ARM_HOST,
            [
                Route(job_base, collection, methods=["GET"]),
                Route(job_base + "/{name}", member, methods=["GET", "PUT", "DELETE"]),
                Route(job_base + "/{name}/cancel", cancel, methods=["POST"]),
            ],
        ),
        (
            api_host(state),
            [
                Route(history + "/runs/{run}", run, methods=["GET"]),
                Route(history + "/runs/{run}/details", run, methods=["GET"]),
                Route(history + "/experimentids/{exp}/runs/{run}", run, methods=["GET"]),
                Route(history + "/experimentids/{exp}/runs/{run}/details", run, methods=["GET"]),
            ],
        ),
    ]
