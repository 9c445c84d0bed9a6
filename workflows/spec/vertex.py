"""The vertex backend's settings (`ModelSpec.vertex`). No secret ever goes here: credentials are
Application Default Credentials (docs/clouds.md: the IAM roles it needs).
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from workflows.spec.common import CloudSettings, ImageUri, KeyPrefix

GcsBucketUri = Annotated[str, Field(pattern=r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")]


GcpProject = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")]


GcpLocation = Annotated[str, Field(pattern=r"^[a-z]+-[a-z]+\d$")]


MachineType = Annotated[str, Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)+$")]


VertexDisplayName = Annotated[str, Field(min_length=1, max_length=128)]


Labels = dict[
    Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")],
    Annotated[str, Field(pattern=r"^[a-z0-9_-]{0,63}$")],
]


class VertexSettings(CloudSettings):
    project: GcpProject
    location: GcpLocation = "us-central1"
    # Run data, training inputs and outputs, model artifacts and audit records live under
    # <staging_bucket>/<prefix>/.
    staging_bucket: GcsBucketUri
    prefix: KeyPrefix = "adaptive-retraining"
    # Training: a CustomJob on this image (it runs our entry module), or, when
    # `pipeline_template` is set, a PipelineJob from that compiled pipeline spec.
    training_image: ImageUri
    machine_type: MachineType = "n1-standard-4"
    replica_count: Annotated[int, Field(ge=1, le=100)] = 1
    pipeline_template: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    service_account: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+$")] | None = (
        None
    )
    # Serving: the endpoint (display name; created when absent) and the serving container.
    endpoint_name: VertexDisplayName
    serving_image: ImageUri
    serving_machine_type: MachineType = "n1-standard-2"
    min_replicas: Annotated[int, Field(ge=1)] = 1
    max_replicas: Annotated[int, Field(ge=1)] = 2
    # A ModelDeploymentMonitoringJob whose results are read as a drift source.
    monitoring_job: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    # Extra chargeback labels on every resource (model, loop id and trigger are always set).
    labels: Labels = {}

    def monitoring_jobs(self) -> list[str]:
        return [self.monitoring_job] if self.monitoring_job else []

    @model_validator(mode="after")
    def _replicas(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self
