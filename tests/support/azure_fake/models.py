"""The workspace's versioned assets: models (the registry) and data assets, containers and
versions (a deployment's data collector registers one data asset per collection).

- PUT `models/{name}/versions/{version}` creates a version (the container is made or updated
  with it: latestVersion, nextVersion); a PUT on an existing version may change only its tags
  and description (replaced, as Azure ML does), properties (new keys only), stage and
  isArchived; its modelUri, modelType, flavors and jobName are immutable (400 UserError).
- GET a version, list versions (`tags=k=v,k2` filter, `$orderBy=createdtime desc`, `$top`,
  `listViewType`), GET/list containers.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.support.azure_fake.server import ARM_HOST, FakeState, arm_error, not_found, system_data
from tests.support.azure_fake.workspace import WORKSPACES

CONTAINERS = "models"
VERSIONS = "models.versions"  # "name:version" -> resource
DATA_CONTAINERS = "data"
DATA_VERSIONS = "data.versions"
_IMMUTABLE = ("modelUri", "modelType", "flavors", "jobName", "dataUri", "dataType")
# The asset kind's path segment -> (container table, version table, version defaults).
_KINDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "models": (CONTAINERS, VERSIONS, {"modelType": "custom_model", "flavors": {}}),
    "data": (DATA_CONTAINERS, DATA_VERSIONS, {"dataType": "uri_folder"}),
}


def _tags_match(tags: dict[str, str], wanted: str) -> bool:
    """Azure ML's `tags` list filter: comma-separated `key` or `key=value` terms, all required."""
    for term in filter(None, (t.strip() for t in wanted.split(","))):
        key, has_value, value = term.partition("=")
        if key not in tags or (has_value and tags[key] != value):
            return False
    return True


def _sort_key(version: dict[str, Any]) -> tuple[int, str]:
    name = version["name"]
    return (int(name), "") if name.isdigit() else (0, name)


def routes(state: FakeState) -> list[tuple[str, list[BaseRoute]]]:
    return [(ARM_HOST, [r for kind in _KINDS for r in _asset_routes(state, kind)])]


def _asset_routes(state: FakeState, kind: str) -> list[BaseRoute]:
    container_table, version_table, defaults = _KINDS[kind]
    containers = state.table(container_table)
    versions = state.table(version_table)

    def versions_of(name: str) -> list[dict[str, Any]]:
        return sorted(
            (v for k, v in versions.items() if k.partition(":")[0] == name), key=_sort_key
        )

    def touch_container(name: str) -> None:
        existing = versions_of(name)
        numeric = [int(v["name"]) for v in existing if v["name"].isdigit()]
        container = containers.get(name)
        containers[name] = {
            "id": f"{state.workspace_id}/{kind}/{name}",
            "name": name,
            "type": f"Microsoft.MachineLearningServices/workspaces/{kind}",
            "properties": {
                "description": (container or {}).get("properties", {}).get("description"),
                "tags": (container or {}).get("properties", {}).get("tags") or {},
                "properties": {},
                "isArchived": False,
                "latestVersion": existing[-1]["name"] if existing else None,
                "nextVersion": str(max(numeric, default=0) + 1),
                "provisioningState": "Succeeded",
            },
            "systemData": system_data((container or {}).get("systemData")),
        }

    async def version(request: Request) -> Response:
        name, number = request.path_params["name"], request.path_params["version"]
        key = f"{name}:{number}"
        with state.lock:
            current = versions.get(key)
            if request.method == "GET":
                if current is None:
                    return not_found("UserError", f"Could not find asset with ID: {name}:{number}")
                return JSONResponse(current)
            if request.method == "DELETE":
                versions.pop(key, None)
                touch_container(name)
                return Response(status_code=200)
            properties = (await request.json()).get("properties", {})
            if current is not None:
                return _update(current, properties)
            resource = {
                "id": f"{state.workspace_id}/{kind}/{name}/versions/{number}",
                "name": number,
                "type": f"Microsoft.MachineLearningServices/workspaces/{kind}/versions",
                "properties": {
                    "tags": {},
                    "properties": {},
                    "isArchived": False,
                    "isAnonymous": False,
                    **defaults,
                    **properties,
                    "provisioningState": "Succeeded",
                },
                "systemData": system_data(),
            }
            versions[key] = resource
            touch_container(name)
            return JSONResponse(resource, status_code=201)

    def _update(current: dict[str, Any], properties: dict[str, Any]) -> Response:
        stored = current["properties"]
        for field in _IMMUTABLE:
            if field in properties and properties[field] != stored.get(field):
                return arm_error(
                    400, "UserError", f"The asset version's {field} cannot be changed."
                )
        old, new = stored.get("properties") or {}, properties.get("properties") or {}
        if any(k in old and old[k] != v for k, v in new.items()):
            return arm_error(
                400, "UserError", "Existing asset version properties cannot be modified."
            )
        stored["properties"] = {**old, **new}
        for field in ("tags", "description", "stage", "isArchived"):
            if field in properties:
                stored[field] = properties[field]
        current["systemData"] = system_data(current["systemData"])
        return JSONResponse(current, status_code=200)

    async def version_list(request: Request) -> Response:
        name = request.path_params["name"]
        wanted = request.query_params.get("tags", "")
        view = request.query_params.get("listViewType", "ActiveOnly")
        with state.lock:
            found = [
                v
                for v in versions_of(name)
                if _tags_match(v["properties"].get("tags") or {}, wanted)
                and (
                    view == "All"
                    or v["properties"].get("isArchived", False) == (view == "ArchivedOnly")
                )
            ]
        order = request.query_params.get("$orderBy", "")
        if order.lower().startswith("createdtime") and order.lower().endswith("desc"):
            found.reverse()
        top = request.query_params.get("$top")
        if top is not None:
            found = found[: int(top)]
        return JSONResponse({"value": found})

    async def container(request: Request) -> Response:
        name = request.path_params["name"]
        with state.lock:
            found = containers.get(name)
            if found is None:
                return not_found("UserError", f"Could not find {kind} container {name}")
            if request.method == "PUT":
                body = (await request.json()).get("properties", {})
                for field in ("tags", "description"):
                    if field in body:
                        found["properties"][field] = body[field]
                found["systemData"] = system_data(found["systemData"])
            return JSONResponse(found)

    async def container_list(request: Request) -> Response:
        with state.lock:
            return JSONResponse({"value": [containers[n] for n in sorted(containers)]})

    base = WORKSPACES + "/{ws}/" + kind
    return [
        Route(base, container_list, methods=["GET"]),
        Route(base + "/{name}", container, methods=["GET", "PUT"]),
        Route(base + "/{name}/versions", version_list, methods=["GET"]),
        Route(base + "/{name}/versions/{version}", version, methods=["GET", "PUT", "DELETE"]),
    ]
