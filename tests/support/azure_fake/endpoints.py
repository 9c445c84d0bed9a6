"""Managed online endpoints and their deployments, as long-running ARM operations.

- PUT `onlineEndpoints/{e}` (create: 201, update: 200) answers the endpoint `Creating` or
  `Updating` with Azure-AsyncOperation/Location headers; the new `traffic` and `mirrorTraffic`
  take effect when the operation ends (after `state.lro_polls` polls). What Azure ML refuses is
  refused when the operation ends, as a Failed operation: traffic naming a deployment that does
  not exist, live traffic not summing to 100 (0 is allowed: nothing served), mirrored traffic
  over 50 in total, or mirrored to a deployment that also takes live traffic.
- PUT `onlineEndpoints/{e}/deployments/{d}` creates or updates a deployment the same way
  (sku.capacity = instance count); the model must be a registered version when given as an
  ARM id of this workspace.
- DELETE a deployment (202, then polled) fails while it takes live or mirrored traffic; DELETE
  an endpoint removes its deployments.
- POST `onlineEndpoints/{e}/listKeys` answers the endpoint's keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.support.azure_fake.models import VERSIONS
from tests.support.azure_fake.server import (
    ARM_HOST,
    FakeState,
    advance_pending,
    arm_error,
    lro_headers,
    not_found,
    start_operation,
    system_data,
)
from tests.support.azure_fake.workspace import WORKSPACES

ENDPOINTS = "onlineEndpoints"
DEPLOYMENTS = "onlineEndpoints.deployments"  # "endpoint/deployment" -> resource
_MODEL = re.compile(r"/workspaces/([^/]+)/models/([^/]+)/versions/([^/]+)$", re.IGNORECASE)


def traffic_problem(
    deployments: set[str], traffic: dict[str, int], mirror: dict[str, int]
) -> str | None:
    """Azure ML's rules for an endpoint's traffic and mirrored traffic, or None if they hold."""
    unknown = sorted((set(traffic) | set(mirror)) - deployments)
    if unknown:
        return f"Traffic or mirror traffic names deployments that do not exist: {unknown}"
    if any(int(v) < 0 or int(v) > 100 for v in [*traffic.values(), *mirror.values()]):
        return "Traffic values must be between 0 and 100."
    if sum(int(v) for v in traffic.values()) not in (0, 100):
        return f"Traffic values need to sum to 100, got {traffic}."
    if sum(int(v) for v in mirror.values()) > 50:
        return f"Mirror traffic values need to sum to utmost 50, got {mirror}."
    both = sorted(d for d, v in mirror.items() if int(v) > 0 and int(traffic.get(d, 0)) > 0)
    if both:
        return f"A deployment cannot receive both live and mirrored traffic: {both}"
    return None


# What Azure ML fills in on a managed deployment when the request leaves it out.
_DEPLOYMENT_DEFAULTS: dict[str, Any] = {
    "endpointComputeType": "Managed",
    "scaleSettings": {"scaleType": "Default"},
    "requestSettings": {
        "requestTimeout": "PT5S",
        "maxConcurrentRequestsPerInstance": 1,
        "maxQueueWait": "PT0.5S",
    },
    "livenessProbe": {
        "initialDelay": "PT10M",
        "period": "PT10S",
        "timeout": "PT2S",
        "successThreshold": 1,
        "failureThreshold": 30,
    },
    "readinessProbe": {
        "initialDelay": "PT10S",
        "period": "PT10S",
        "timeout": "PT2S",
        "successThreshold": 1,
        "failureThreshold": 30,
    },
    "appInsightsEnabled": False,
    "egressPublicNetworkAccess": "Enabled",
    "properties": {},
}


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def routes(state: FakeState) -> list[tuple[str, list[BaseRoute]]]:
    endpoints = state.table(ENDPOINTS)
    deployments = state.table(DEPLOYMENTS)

    def deployments_of(endpoint: str) -> set[str]:
        return {key.partition("/")[2] for key in deployments if key.partition("/")[0] == endpoint}

    # The last operation started on each endpoint / "endpoint/deployment".
    pending: dict[str, tuple[str, str]] = {}

    def operation(
        request: Request, finish: Callable[[], dict[str, Any] | None], key: str
    ) -> dict[str, str]:
        pending[key] = start_operation(state, request, finish)
        return lro_headers(state, pending[key])

    async def endpoint(request: Request) -> Response:
        name = request.path_params["endpoint"]
        with state.lock:
            if request.method == "GET":
                advance_pending(state, pending.get(name))
            current = endpoints.get(name)
            if request.method == "GET":
                if current is None:
                    return not_found("UserError", f"Could not find online endpoint {name}")
                return JSONResponse(current)
            if request.method == "DELETE":
                if current is None:
                    return Response(status_code=204)
                current["properties"]["provisioningState"] = "Deleting"

                def remove() -> None:
                    endpoints.pop(name, None)
                    for key in [k for k in deployments if k.partition("/")[0] == name]:
                        del deployments[key]

                return Response(status_code=202, headers=operation(request, remove, name))
            body = await request.json()
            return _put_endpoint(request, name, current, body)

    def _put_endpoint(
        request: Request, name: str, current: dict[str, Any] | None, body: dict[str, Any]
    ) -> Response:
        wanted = body.get("properties", {})
        if current is None:
            current = {
                "id": f"{state.workspace_id}/onlineEndpoints/{name}",
                "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
                "location": body.get("location") or state.location,
                "kind": body.get("kind"),
                "identity": body.get("identity") or {"type": "SystemAssigned"},
                "tags": body.get("tags") or {},
                "properties": {
                    "authMode": wanted.get("authMode", "Key"),
                    "description": wanted.get("description"),
                    "properties": wanted.get("properties") or {},
                    "traffic": {},
                    "mirrorTraffic": {},
                    "scoringUri": f"https://{name}.{state.location}.inference.ml.azure.com/score",
                    "swaggerUri": f"https://{name}.{state.location}.inference.ml.azure.com/swagger.json",
                    "publicNetworkAccess": wanted.get("publicNetworkAccess", "Enabled"),
                    "provisioningState": "Creating",
                },
                "systemData": system_data(),
            }
            endpoints[name] = current
            status = 201
        else:
            current["properties"]["provisioningState"] = "Updating"
            current["tags"] = body.get("tags") or current["tags"]
            current["systemData"] = system_data(current["systemData"])
            status = 200
        traffic = {k: int(v) for k, v in (wanted.get("traffic") or {}).items()}
        mirror = {k: int(v) for k, v in (wanted.get("mirrorTraffic") or {}).items()}

        def finish() -> dict[str, Any] | None:
            problem = traffic_problem(deployments_of(name), traffic, mirror)
            properties = current["properties"]
            properties["provisioningState"] = "Failed" if problem else "Succeeded"
            if problem:
                if status == 201:
                    endpoints.pop(name, None)
                else:
                    properties["provisioningState"] = "Succeeded"  # the old traffic stays
                return _failure("BadArgument", problem)
            properties["traffic"] = traffic
            properties["mirrorTraffic"] = mirror
            if "description" in wanted:
                properties["description"] = wanted["description"]
            return None

        return JSONResponse(current, status_code=status, headers=operation(request, finish, name))

    async def keys(request: Request) -> Response:
        name = request.path_params["endpoint"]
        with state.lock:
            if name not in endpoints:
                return not_found("UserError", f"Could not find online endpoint {name}")
        return JSONResponse({"primaryKey": f"{name}-primary", "secondaryKey": f"{name}-secondary"})

    async def endpoint_list(request: Request) -> Response:
        with state.lock:
            return JSONResponse({"value": [endpoints[n] for n in sorted(endpoints)]})

    async def deployment(request: Request) -> Response:
        endpoint_name, name = request.path_params["endpoint"], request.path_params["deployment"]
        key = f"{endpoint_name}/{name}"
        with state.lock:
            if request.method == "GET":
                advance_pending(state, pending.get(key))
            owner = endpoints.get(endpoint_name)
            current = deployments.get(key)
            if owner is None:
                return not_found("UserError", f"Could not find online endpoint {endpoint_name}")
            if request.method == "GET":
                if current is None:
                    return not_found("UserError", f"Could not find deployment {name}")
                return JSONResponse(current)
            if request.method == "DELETE":
                if current is None:
                    return Response(status_code=204)
                live = owner["properties"]["traffic"].get(name, 0)
                mirrored = owner["properties"]["mirrorTraffic"].get(name, 0)
                if live or mirrored:
                    return arm_error(
                        400,
                        "BadRequest",
                        f"Deployment {name} has {live}% live and {mirrored}% mirrored traffic: "
                        "set its traffic to 0 before deleting it.",
                    )
                current["properties"]["provisioningState"] = "Deleting"
                return Response(
                    status_code=202,
                    headers=operation(request, lambda: deployments.pop(key, None) and None, key),
                )
            body = await request.json()
            return _put_deployment(request, key, name, current, body)

    def _put_deployment(
        request: Request,
        key: str,
        name: str,
        current: dict[str, Any] | None,
        body: dict[str, Any],
    ) -> Response:
        wanted = body.get("properties", {})
        model = wanted.get("model") or ""
        found = _MODEL.search(model)
        registered = found is not None and f"{found[2]}:{found[3]}" in state.table(VERSIONS)
        if found is not None and found[1] == state.workspace and not registered:
            return arm_error(400, "BadArgument", f"Model {model} was not found.")
        resource: dict[str, Any] = {
            "id": f"{state.workspace_id}/onlineEndpoints/{key.replace('/', '/deployments/')}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
            "location": body.get("location") or state.location,
            "kind": body.get("kind") or "Managed",
            "tags": body.get("tags") or {},
            "sku": body.get("sku") or {"name": "Default", "capacity": 1},
            "properties": {
                **_DEPLOYMENT_DEFAULTS,
                **wanted,
                "provisioningState": "Creating" if current is None else "Updating",
            },
            "systemData": system_data((current or {}).get("systemData")),
        }
        status = 201 if current is None else 200
        deployments[key] = resource

        def finish() -> dict[str, Any] | None:
            resource["properties"]["provisioningState"] = "Succeeded"
            return None

        return JSONResponse(resource, status_code=status, headers=operation(request, finish, key))

    async def deployment_list(request: Request) -> Response:
        endpoint_name = request.path_params["endpoint"]
        with state.lock:
            found = [
                deployments[f"{endpoint_name}/{d}"] for d in sorted(deployments_of(endpoint_name))
            ]
        return JSONResponse({"value": found})

    base = WORKSPACES + "/{ws}/onlineEndpoints"
    return [
        (
            ARM_HOST,
            [
                Route(base, endpoint_list, methods=["GET"]),
                Route(base + "/{endpoint}", endpoint, methods=["GET", "PUT", "DELETE"]),
                Route(base + "/{endpoint}/listKeys", keys, methods=["POST"]),
                Route(base + "/{endpoint}/deployments", deployment_list, methods=["GET"]),
                Route(
                    base + "/{endpoint}/deployments/{deployment}",
                    deployment,
                    methods=["GET", "PUT", "DELETE"],
                ),
            ],
        )
    ]
