"""The fake's Vertex AI endpoints: create (a done long-running operation), get, list (filter on
display_name), patch (traffic split, labels), deployModel and undeployModel.

What Vertex enforces and our code must respect is enforced here too: a traffic split sums to 100
and names only deployed models (400 INVALID_ARGUMENT otherwise), the model just being deployed
is "0" in deployModel's split, and a deployed model still taking traffic cannot be undeployed
without a new split. Models are not looked up (another concern owns them): any
`projects/*/locations/*/models/*` name deploys. `state.faults` ("METHOD /path" prefix, status,
message) fail the next matching request once, e.g. a 409 while a deployment is in progress.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from tests.support.vertex_fake.server import FakeState

ENDPOINTS = "endpoints"
PENDING = "pendingDeployments"
# hooks[SLOW_DEPLOYS]() true: deployModel answers a running operation, as Vertex does for the
# minutes a deployment takes, until `finish_deployments`.
SLOW_DEPLOYS = "slow_deploys"
_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ABORTED"}
_STATUS.update({429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"})
_MODEL = re.compile(r"^projects/[^/]+/locations/[^/]+/models/[^/]+$")
_ids = itertools.count(1_000_001)


def now_text() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def error(status: int, message: str) -> JSONResponse:
    """A Google API error body, as `google.api_core.exceptions.from_http_response` reads it."""
    body = {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}
    return JSONResponse(body, status_code=status)


def fault(state: FakeState, request: Request) -> JSONResponse | None:
    """The first injected fault matching this request, consumed."""
    target = f"{request.method} {request.url.path}"
    with state.lock:
        for index, (prefix, status, message) in enumerate(state.faults):
            if target.startswith(prefix):
                del state.faults[index]
                return error(status, message)
    return None


def done_operation(parent: str, type_name: str, response: dict[str, Any]) -> JSONResponse:
    """A long-running operation that is already done, so the SDK never polls it."""
    body = {
        "name": f"{parent}/operations/{next(_ids)}",
        "done": True,
        "response": {
            "@type": f"type.googleapis.com/google.cloud.aiplatform.v1.{type_name}",
            **response,
        },
    }
    return JSONResponse(body)


def _split_error(endpoint: dict[str, Any], split: dict[str, Any]) -> str | None:
    deployed = {model["id"] for model in endpoint.get("deployedModels", [])}
    unknown = sorted(set(split) - deployed)
    if unknown:
        return f"traffic split names deployed models that do not exist: {unknown}"
    if any(int(weight) < 0 for weight in split.values()):
        return "traffic split weights must not be negative"
    if deployed and sum(int(weight) for weight in split.values()) != 100:
        return f"The sum of traffic split values must be 100, got {split}"
    return None


def _apply_deploy(
    endpoint: dict[str, Any], candidate: dict[str, Any], split: dict[str, Any]
) -> None:
    endpoint["deployedModels"] = candidate["deployedModels"]
    if split:
        endpoint["trafficSplit"] = split
    endpoint["updateTime"] = now_text()
    endpoint["etag"] = str(int(endpoint["etag"]) + 1)


def finish_deployments(state: FakeState) -> None:
    """Complete the deployments left running while `hooks[SLOW_DEPLOYS]()` was true."""
    with state.lock:
        for endpoint, candidate, split in state.table(PENDING).values():
            _apply_deploy(endpoint, candidate, split)
        state.table(PENDING).clear()


def routes(state: FakeState) -> list[BaseRoute]:
    table = state.table(ENDPOINTS)

    async def collection(request: Request) -> JSONResponse:
        if (failed := fault(state, request)) is not None:
            return failed
        parent = (
            f"projects/{request.path_params['project']}/locations/{request.path_params['location']}"
        )
        if request.method == "GET":
            return _list(parent, request)
        body = await request.json()
        endpoint_id = request.query_params.get("endpointId") or str(next(_ids))
        name = f"{parent}/endpoints/{endpoint_id}"
        stamp = now_text()
        endpoint = {
            "name": name,
            "displayName": body.get("displayName", ""),
            "labels": body.get("labels", {}),
            "deployedModels": [],
            "trafficSplit": {},
            "predictRequestResponseLoggingConfig": body.get(
                "predictRequestResponseLoggingConfig", {}
            ),
            "createTime": stamp,
            "updateTime": stamp,
            "etag": "1",
        }
        with state.lock:
            if name in table:
                return error(409, f"endpoint {name} already exists")
            table[name] = endpoint
        return done_operation(name, "Endpoint", endpoint)

    def _list(parent: str, request: Request) -> JSONResponse:
        wanted = request.query_params.get("filter", "")
        match = re.fullmatch(r'\s*display_name\s*=\s*"([^"]*)"\s*', wanted) if wanted else None
        if wanted and match is None:
            return error(400, f"the fake only filters on display_name, got {wanted!r}")
        with state.lock:
            found = [
                endpoint
                for name, endpoint in sorted(table.items())
                if name.startswith(f"{parent}/")
                and (match is None or endpoint["displayName"] == match.group(1))
            ]
        return JSONResponse({"endpoints": found})

    async def member(request: Request) -> JSONResponse:
        if (failed := fault(state, request)) is not None:
            return failed
        parent = (
            f"projects/{request.path_params['project']}/locations/{request.path_params['location']}"
        )
        endpoint_id, _, verb = request.path_params["tail"].partition(":")
        name = f"{parent}/endpoints/{endpoint_id}"
        body = await request.json() if request.method in ("POST", "PATCH") else {}
        with state.lock:
            endpoint = table.get(name)
            if endpoint is None:
                return error(404, f"Endpoint {name} not found")
            if request.method == "GET" and not verb:
                return JSONResponse(endpoint)
            if request.method == "PATCH" and not verb:
                return _patch(endpoint, body, request.query_params.get("updateMask", ""))
            if request.method == "POST" and verb == "deployModel":
                return _deploy(endpoint, body)
            if request.method == "POST" and verb == "undeployModel":
                return _undeploy(endpoint, body)
            if request.method == "POST" and verb == "mutateDeployedModel":
                return _mutate(endpoint, body, request.query_params.get("updateMask", ""))
        return error(400, f"the fake does not implement {request.method} {name}:{verb}")

    def _touch(endpoint: dict[str, Any]) -> None:
        endpoint["updateTime"] = now_text()
        endpoint["etag"] = str(int(endpoint["etag"]) + 1)

    def _patch(endpoint: dict[str, Any], body: dict[str, Any], mask: str) -> JSONResponse:
        fields = [field for field in mask.split(",") if field]
        allowed = {
            "trafficSplit",
            "labels",
            "displayName",
            "description",
            "predictRequestResponseLoggingConfig",
        }
        if not fields or set(fields) - allowed:
            return error(400, f"update mask must name some of {sorted(allowed)}, got {mask!r}")
        if "trafficSplit" in fields:
            split = body.get("trafficSplit", {})
            if (problem := _split_error(endpoint, split)) is not None:
                return error(400, problem)
        for field in fields:
            empty: Any = "" if field in ("displayName", "description") else {}
            endpoint[field] = body.get(field, empty)
        _touch(endpoint)
        return JSONResponse(endpoint)

    def _deploy(endpoint: dict[str, Any], body: dict[str, Any]) -> JSONResponse:
        deployed = dict(body.get("deployedModel", {}))
        if not _MODEL.match(deployed.get("model", "")):
            return error(400, f"deployedModel.model must be a model resource, got {deployed!r}")
        if "dedicatedResources" not in deployed:
            return error(400, "this fake only deploys with dedicatedResources")
        deployed_id = deployed.get("id") or str(next(_ids))
        if any(model["id"] == deployed_id for model in endpoint["deployedModels"]):
            return error(409, f"deployed model {deployed_id} already exists")
        if deployed_id in state.table(PENDING):
            return error(409, f"deployed model {deployed_id} is being deployed")
        deployed.update(id=deployed_id, createTime=now_text())
        # Vertex validates the split when the deployment is asked for.
        split = {
            (deployed_id if key == "0" else key): value
            for key, value in body.get("trafficSplit", {}).items()
        }
        candidate = {**endpoint, "deployedModels": [*endpoint["deployedModels"], deployed]}
        if split and (problem := _split_error(candidate, split)) is not None:
            return error(400, problem)
        if state.hooks.get(SLOW_DEPLOYS, lambda: False)():
            state.table(PENDING)[deployed_id] = (endpoint, candidate, split)
            return JSONResponse({"name": f"{endpoint['name']}/operations/{next(_ids)}"})
        _apply_deploy(endpoint, candidate, split)
        return done_operation(endpoint["name"], "DeployModelResponse", {"deployedModel": deployed})

    def _mutate(endpoint: dict[str, Any], body: dict[str, Any], mask: str) -> JSONResponse:
        """mutateDeployedModel: replicas and autoscaling specs of a deployed model, in place."""
        wanted = dict(body.get("deployedModel", {}))
        fields = [field for field in (mask or body.get("updateMask", "")).split(",") if field]
        allowed = {
            "dedicatedResources.minReplicaCount",
            "dedicatedResources.maxReplicaCount",
            "dedicatedResources.autoscalingMetricSpecs",
        }
        if not fields or set(fields) - allowed:
            return error(400, f"update mask must name some of {sorted(allowed)}, got {mask!r}")
        for model in endpoint["deployedModels"]:
            if model["id"] == wanted.get("id"):
                for field in fields:
                    key = field.split(".", 1)[1]
                    model["dedicatedResources"][key] = wanted.get("dedicatedResources", {}).get(key)
                _touch(endpoint)
                return done_operation(
                    endpoint["name"], "MutateDeployedModelResponse", {"deployedModel": model}
                )
        return error(404, f"deployed model {wanted.get('id')} not found on {endpoint['name']}")

    def _undeploy(endpoint: dict[str, Any], body: dict[str, Any]) -> JSONResponse:
        deployed_id = body.get("deployedModelId", "")
        remaining = [model for model in endpoint["deployedModels"] if model["id"] != deployed_id]
        if len(remaining) == len(endpoint["deployedModels"]):
            return error(404, f"deployed model {deployed_id} not found on {endpoint['name']}")
        split = body.get("trafficSplit") or {
            key: value for key, value in endpoint["trafficSplit"].items() if key != deployed_id
        }
        if int(endpoint["trafficSplit"].get(deployed_id, 0)) > 0 and not body.get("trafficSplit"):
            return error(400, f"deployed model {deployed_id} still takes traffic: give a new split")
        candidate = {**endpoint, "deployedModels": remaining}
        if remaining and (problem := _split_error(candidate, split)) is not None:
            return error(400, problem)
        endpoint["deployedModels"] = remaining
        endpoint["trafficSplit"] = split if remaining else {}
        _touch(endpoint)
        return done_operation(endpoint["name"], "UndeployModelResponse", {})

    prefix = "/v1/projects/{project}/locations/{location}/endpoints"
    return [
        Route(prefix, collection, methods=["GET", "POST"]),
        Route(prefix + "/{tail}", member, methods=["GET", "PATCH", "POST"]),
    ]
