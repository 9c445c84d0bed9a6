"""The fake's Model Registry routes (Vertex AI v1 REST): upload, versions, aliases, get, list.

`models:upload` returns a done long-running operation (nothing to poll) whose response
names the model and its new version; `parentModel` adds a version to an existing model. Models
are stored per version (`<name>@<versionId>`); `get` accepts `<id>`, `<id>@<version>` and
`<id>@<alias>`. Aliases are unique within a model: adding one another version holds is refused
(the strict reading of the API, so code under test must move aliases explicitly), `-alias`
removes it, and the `default` alias follows the newest default upload.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.support.vertex_fake.jobs import matches
from tests.support.vertex_fake.server import FakeState, google_error

MODELS = "models"  # "<name>@<versionId>" -> Model JSON
OPERATIONS = "operations"
_ids = itertools.count(7000)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def versions_of(state: FakeState, name: str) -> list[dict[str, Any]]:
    with state.lock:
        found = [m for key, m in state.table(MODELS).items() if key.startswith(name + "@")]
    return sorted(found, key=lambda m: int(m["versionId"]))


def resolve(state: FakeState, name: str, version: str | None) -> dict[str, Any] | None:
    """A model version by id or alias (None: the default version)."""
    wanted = version or "default"
    for model in versions_of(state, name):
        if model["versionId"] == wanted or wanted in model["versionAliases"]:
            return model
    return None


def routes(state: FakeState) -> list[BaseRoute]:
    def parent_of(request: Request) -> str:
        params = request.path_params
        return f"projects/{params['project']}/locations/{params['location']}"

    async def upload(request: Request) -> Response:
        body = await request.json()
        model, parent_model = dict(body["model"]), body.get("parentModel")
        aliases = list(model.get("versionAliases", []))
        with state.lock:
            if parent_model:
                existing = versions_of(state, parent_model)
                if not existing:
                    return google_error(404, f"Model {parent_model} not found.")
                name, version = parent_model, str(int(existing[-1]["versionId"]) + 1)
                model["displayName"] = existing[0]["displayName"]
            else:
                name, version = f"{parent_of(request)}/models/{next(_ids)}", "1"
                existing = []
                if "default" not in aliases:
                    aliases.append("default")
            for alias in aliases:
                holder = next((m for m in existing if alias in m["versionAliases"]), None)
                if holder is not None and alias != "default":
                    return google_error(400, f"Alias {alias} is already used by another version.")
                if holder is not None:
                    holder["versionAliases"].remove(alias)
            now = _now()
            model.update(
                name=name,
                versionId=version,
                versionAliases=aliases,
                createTime=existing[0]["createTime"] if existing else now,
                updateTime=now,
                versionCreateTime=now,
                versionUpdateTime=now,
            )
            state.table(MODELS)[f"{name}@{version}"] = model
            operation: dict[str, Any] = {
                "name": f"{name}/operations/{next(_ids)}",
                "done": True,
                "response": {
                    "@type": "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse",
                    "model": name,
                    "modelVersionId": version,
                },
            }
            state.table(OPERATIONS)[operation["name"]] = operation
        return JSONResponse(operation)

    async def list_models(request: Request) -> Response:
        parent = parent_of(request) + "/models/"
        with state.lock:
            names = sorted({key.partition("@")[0] for key in state.table(MODELS)})
        try:
            found = [
                model
                for name in names
                if name.startswith(parent)
                and (model := resolve(state, name, None)) is not None
                and matches(model, request.query_params.get("filter", ""))
            ]
        except ValueError as error:
            return google_error(400, str(error))
        return JSONResponse({"models": found} if found else {})

    async def member(request: Request) -> Response:
        reference, _, verb = request.path_params["model"].partition(":")
        model_id, _, version = reference.partition("@")
        name = f"{parent_of(request)}/models/{model_id}"
        if not versions_of(state, name):
            return google_error(404, f"Model {name} not found.")
        if request.method == "GET" and verb == "listVersions":
            try:
                found = [
                    m
                    for m in versions_of(state, name)
                    if matches(m, request.query_params.get("filter", ""))
                ]
            except ValueError as error:
                return google_error(400, str(error))
            return JSONResponse({"models": found} if found else {})
        with state.lock:
            model = resolve(state, name, version or None)
            if model is None:
                return google_error(404, f"Model {name}@{version} not found.")
            if request.method == "GET" and not verb:
                return JSONResponse(model)
            if request.method == "POST" and verb == "mergeVersionAliases":
                body = await request.json()
                return merge_aliases(state, name, model, body.get("versionAliases", []))
        return google_error(400, f"unsupported {request.method} {verb}")

    async def operation(request: Request) -> Response:
        found = state.table(OPERATIONS).get(request.url.path.removeprefix("/v1/"))
        return JSONResponse(found) if found else google_error(404, "no such operation")

    base = "/v1/projects/{project}/locations/{location}/models"
    return [
        Route(base + ":upload", upload, methods=["POST"]),
        Route(base, list_models, methods=["GET"]),
        Route(base + "/{model}/operations/{operation}", operation, methods=["GET"]),
        Route(base + "/{model}", member, methods=["GET", "POST"]),
    ]


def merge_aliases(
    state: FakeState, name: str, model: dict[str, Any], changes: list[str]
) -> Response:
    others = [m for m in versions_of(state, name) if m is not model]
    for change in changes:
        alias = change.removeprefix("-")
        if alias == "default" or not alias:
            return google_error(400, "The default alias cannot be changed this way.")
        if not change.startswith("-") and any(alias in m["versionAliases"] for m in others):
            return google_error(400, f"Alias {alias} is already used by another version.")
    for change in changes:
        alias = change.removeprefix("-")
        if change.startswith("-"):
            if alias in model["versionAliases"]:
                model["versionAliases"].remove(alias)
        elif alias not in model["versionAliases"]:
            model["versionAliases"].append(alias)
    model["versionUpdateTime"] = _now()
    return JSONResponse(model)
