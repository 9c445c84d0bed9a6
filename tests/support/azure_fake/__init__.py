"""A local HTTP fake of the Azure REST APIs the Azure ML backend's SDKs call.

Microsoft ships no emulator of Azure ML, Azure Monitor or Event Grid, so the real SDKs
(azure-ai-ml, azure-mgmt-monitor, azure-storage-blob, azure-eventgrid) talk to this Starlette
app on 127.0.0.1 through `client.LoopbackTransport` (azure-core's pluggable transport), with
`client.StaticTokenCredential` standing in for Microsoft Entra ID. State lives in one
`server.FakeState`; each concern adds routes per Azure host (`routes(state)`):

- workspace.py  workspace GET, service discovery, datastores
- jobs.py       command/pipeline jobs (PUT idempotent by name, status per read, cancel, list)
                and the run history that holds their times and errors
- models.py     model and data asset containers and versions (tags, properties, stage)
- endpoints.py  managed online endpoints and deployments as long-running operations, with
                Azure ML's traffic and mirror-traffic rules
- monitor.py    Azure Monitor metrics (seeded per minute) and autoscale settings
- blob.py       Blob Storage containers and block blobs (XML listing, ETags, ranges)
- eventgrid.py  Event Grid topic publishing (EventGridEvent and CloudEvents schemas)

`server.Fault`s in `state.faults` answer matching requests with an error (429 with
Retry-After, 401, 403, 5xx...). Only the fake's own modules import nothing from Azure; the
client helpers need azure-core.
"""

from tests.support.azure_fake import blob, endpoints, eventgrid, jobs, models, monitor, workspace
from tests.support.azure_fake.server import FakeState, Fault, RouteFactory, RunningFake, serve

ALL_ROUTES: list[RouteFactory] = [
    workspace.routes,
    jobs.routes,
    models.routes,
    endpoints.routes,
    monitor.routes,
    blob.routes,
    eventgrid.routes,
]

__all__ = ["ALL_ROUTES", "FakeState", "Fault", "RunningFake", "serve"]
