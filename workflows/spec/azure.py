"""The azure backend's settings (`ModelSpec.azure`): Azure Machine Learning, Azure Monitor, Blob
Storage and Event Grid.

No secret ever goes here: the spec travels through workflow history. The worker authenticates
with azure-identity's DefaultAzureCredential (environment service principal, workload or
managed identity, `az login`); docs/clouds.md lists the roles it needs on each resource.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from workflows.common.models import StrictModel
from workflows.spec.common import CaptureSettings, CloudSettings, KeyPrefix, PriceTable, Tags

AzureGuid = Annotated[
    str,
    Field(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
]
ResourceGroup = Annotated[str, Field(pattern=r"^[-\w._()]{0,89}[-\w_()]$")]
# Workspace, compute and datastore names: a letter or digit first, then letters, digits, - and _.
WorkspaceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$")]
ComputeName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9-]{1,31}$")]
DatastoreName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,255}$")]
StorageAccount = Annotated[str, Field(pattern=r"^[a-z0-9]{3,24}$")]
# 3-63 lowercase letters, digits and single hyphens, a letter or digit at each end.
BlobContainer = Annotated[str, Field(pattern=r"^[a-z0-9](?:-?[a-z0-9]){2,62}$", max_length=63)]
# Online endpoint names are unique in a region: 3-32 letters, digits and hyphens, a letter first.
OnlineEndpointName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")]
# An Azure ML asset reference: `azureml:name:version` or `azureml:name@label`.
AssetReference = Annotated[str, Field(pattern=r"^azureml:[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+|@\w+)$")]
# Azure VM sizes as Azure ML names them (`Standard_DS3_v2`, `Standard_NC6s_v3`).
VmSize = Annotated[str, Field(pattern=r"^Standard_[A-Za-z0-9_]+$")]
# An Event Grid custom topic's endpoint.
EventGridTopic = Annotated[
    str, Field(pattern=r"^https://[a-z0-9-]+\.[a-z0-9-]+\.eventgrid\.azure\.net/api/events$")
]


# Azure ML compute list prices (USD per node-hour, pay-as-you-go, West Europe, Linux) used when
# the spec's `training_prices` does not name the VM size: documented defaults, not a price feed.
DEFAULT_TRAINING_PRICES: dict[str, float] = {
    "Standard_DS2_v2": 0.146,
    "Standard_DS3_v2": 0.293,
    "Standard_DS4_v2": 0.585,
    "Standard_D4s_v3": 0.23,
    "Standard_D8s_v3": 0.46,
    "Standard_E4s_v3": 0.304,
    "Standard_F4s_v2": 0.203,
    "Standard_NC6s_v3": 3.823,
}


class AzureCapture(CaptureSettings):
    """The deployments' data collector (model_inputs and model_outputs) and the ground truth."""

    # Where the collector writes: `<prefix>/<endpoint>/<deployment>/<collection>/yyyy/MM/dd/HH/`
    # in the settings' container (Azure ML's default path on the workspace's blob datastore).
    prefix: KeyPrefix = "modelDataCollector"
    # Ground truth: `yyyy/mm/dd/hh/*.jsonl` files in SageMaker Model Monitor's merge format
    # under this prefix of the settings' container (default `<prefix of the settings>/
    # ground-truth`).
    ground_truth_prefix: KeyPrefix | None = None
    # The field of each input row carrying the caller's request id (the ground truth's key);
    # a row without it is keyed by the collector's correlation id and its position.
    id_field: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.-]{0,127}$")] = "request_id"


class ScheduledCapacity(StrictModel):
    """A weekly autoscale profile of Azure Monitor: from `days` at `hour:minute` (in
    `timezone`), until the next profile starts, the deployment keeps these bounds."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]
    days: list[
        Literal["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    ] = Field(min_length=1)
    hour: Annotated[int, Field(ge=0, le=23)]
    minute: Annotated[int, Field(ge=0, le=59)] = 0
    # Azure Monitor's Windows time zone names ("UTC", "W. Europe Standard Time").
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    minimum: Annotated[int, Field(ge=1)]
    maximum: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.minimum > self.maximum:
            raise ValueError("minimum must not exceed maximum")
        return self


class AzureAutoscale(StrictModel):
    """An Azure Monitor autoscale setting on every deployment: CPU-based rules between
    `minimum` and `maximum` instances, and scheduled profiles before known peaks."""

    enabled: bool = True
    minimum: Annotated[int, Field(ge=1)] = 1
    maximum: Annotated[int, Field(ge=1)] = 3
    # Scale out above this average CPU (percent over 5 minutes), in below half of it.
    cpu_target: Annotated[int, Field(ge=1, le=100)] = 70
    scheduled: list[ScheduledCapacity] = []

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.minimum > self.maximum:
            raise ValueError("minimum must not exceed maximum")
        return self


class AzureSettings(CloudSettings):
    subscription_id: AzureGuid
    resource_group: ResourceGroup
    workspace: WorkspaceName
    # The workspace's blob storage: run data, training inputs/outputs, model artifacts, the
    # data collector's output and audit records live in `<container>` under `<prefix>/`;
    # `datastore` is the workspace datastore that names this container (jobs and models refer
    # to blobs through it: `azureml://datastores/<datastore>/paths/...`).
    storage_account: StorageAccount
    container: BlobContainer
    datastore: DatastoreName = "workspaceblobstore"
    prefix: KeyPrefix = "adaptive-retraining"
    # Training: a command job per loop on this compute cluster, in this environment (an image
    # containing this package and the user's entrypoint module).
    compute: ComputeName
    training_environment: AssetReference
    # The cluster's VM size and node count (what a job is billed for).
    instance_type: VmSize = "Standard_DS3_v2"
    instance_count: Annotated[int, Field(ge=1, le=100)] = 1
    experiment_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,255}$")] = (
        "adaptive-retraining"
    )
    # Serving: a managed online endpoint (created when absent), one deployment per registered
    # version, in this environment (an image whose server loads our model.joblib).
    endpoint_name: OnlineEndpointName
    serving_environment: AssetReference
    serving_instance_type: VmSize = "Standard_DS3_v2"
    serving_instance_count: Annotated[int, Field(ge=1)] = 1
    # The share of live requests a shadow deployment receives as mirrored copies (Azure ML
    # mirrors at most 50% in total; the callers only ever see the live deployments' answers).
    mirror_percentage: Annotated[int, Field(ge=1, le=50)] = 50
    # Extra chargeback tags on jobs, models, endpoints and deployments (model, loop id and
    # trigger are always set).
    tags: Tags = {}
    capture: AzureCapture | None = AzureCapture()
    autoscale: AzureAutoscale = AzureAutoscale()
    # Every notification of the model is also published to this Event Grid custom topic.
    eventgrid_topic: EventGridTopic | None = None
    # USD per node-hour by VM size, over DEFAULT_TRAINING_PRICES.
    training_prices: PriceTable = {}

    @property
    def store_root(self) -> str:
        return f"az://{self.container}/{self.prefix}"

    def datastore_uri(self, path: str) -> str:
        """The `azureml://` URI of a path in the container, as jobs and models refer to it."""
        return f"azureml://datastores/{self.datastore}/paths/{path}"

    def ground_truth_prefix(self) -> str:
        if self.capture is not None and self.capture.ground_truth_prefix:
            return self.capture.ground_truth_prefix
        return f"{self.prefix}/ground-truth"

    def training_price(self, instance_type: str) -> float | None:
        return {**DEFAULT_TRAINING_PRICES, **self.training_prices}.get(instance_type)
