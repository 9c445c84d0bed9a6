"""The workspace itself and its service discovery, which the SDK reads before it calls the
workspace's data-plane services (run history, for a job's times and error details).

GET workspace answers a workspace in `state.location` whose `discoveryUrl` is the fake's
`<region>.api.azureml.ms/discovery` (anonymous, as on Azure); discovery names that host for
every service. Datastores (get, list, `isDefault=true`) are blob containers of
`state.storage_account`, named in `state.datastores`; `workspaceblobstore` is the default.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.support.azure_fake.server import ARM_HOST, FakeState, not_found, system_data

DEFAULT_DATASTORE = "workspaceblobstore"
WORKSPACES = (
    "/subscriptions/{sub}/resourceGroups/{rg}"
    "/providers/Microsoft.MachineLearningServices/workspaces"
)


def api_host(state: FakeState) -> str:
    return f"{state.location}.api.azureml.ms"


def routes(state: FakeState) -> list[tuple[str, list[BaseRoute]]]:
    async def workspace(request: Request) -> Response:
        if request.path_params["ws"] != state.workspace:
            return not_found("ResourceNotFound", f"Workspace {request.path_params['ws']} not found")
        body = {
            "id": state.workspace_id,
            "name": state.workspace,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": state.location,
            "kind": "Default",
            "tags": {},
            "identity": {"type": "SystemAssigned"},
            "properties": {
                "friendlyName": state.workspace,
                "discoveryUrl": f"https://{api_host(state)}/discovery",
                "mlFlowTrackingUri": f"azureml://{api_host(state)}/mlflow/v1.0{state.workspace_id}",
                "provisioningState": "Succeeded",
                "workspaceId": "11111111-2222-4333-8444-555555555555",
                "storageAccount": (
                    f"/subscriptions/{state.subscription}/resourceGroups/{state.resource_group}"
                    f"/providers/Microsoft.Storage/storageAccounts/{state.storage_account}"
                ),
                "publicNetworkAccess": "Enabled",
            },
        }
        return JSONResponse(body)

    async def discovery(request: Request) -> Response:
        base = f"https://{api_host(state)}"
        return JSONResponse(
            {
                "api": base,
                "catalog": base,
                "experimentation": base,
                "gallery": f"{base}/gallery/v1.0",
                "history": base,
                "hyperdrive": f"{base}/hyperdrive/v1.0",
                "labeling": base,
                "modelmanagement": base,
                "pipelines": base,
                "studio": "https://ml.azure.com",
            }
        )

    def datastore_resource(name: str) -> dict[str, Any]:
        return {
            "id": f"{state.workspace_id}/datastores/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/datastores",
            "properties": {
                "datastoreType": "AzureBlob",
                "accountName": state.storage_account,
                "containerName": state.datastores[name],
                "endpoint": "core.windows.net",
                "protocol": "https",
                "credentials": {"credentialsType": "AccountKey"},
                "isDefault": name == DEFAULT_DATASTORE,
                "serviceDataAccessAuthIdentity": "None",
                "tags": {},
                "properties": {},
            },
            "systemData": system_data(),
        }

    async def datastore(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in state.datastores:
            return not_found("UserError", f"Datastore {name} not found")
        return JSONResponse(datastore_resource(name))

    async def datastores(request: Request) -> Response:
        default_only = request.query_params.get("isDefault", "").lower() == "true"
        names = [n for n in sorted(state.datastores) if not default_only or n == DEFAULT_DATASTORE]
        return JSONResponse({"value": [datastore_resource(n) for n in names]})

    return [
        (
            ARM_HOST,
            [
                Route(WORKSPACES + "/{ws}", workspace, methods=["GET"]),
                Route(WORKSPACES + "/{ws}/datastores", datastores, methods=["GET"]),
                Route(WORKSPACES + "/{ws}/datastores/{name}", datastore, methods=["GET"]),
            ],
        ),
        (api_host(state), [Route("/discovery", discovery, methods=["GET"])]),
    ]
