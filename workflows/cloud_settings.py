"""Per-model settings of the cloud backends (`ModelSpec.sagemaker`, `ModelSpec.vertex`).

No secret ever goes here: the spec travels through workflow history. AWS credentials come from
boto3's default chain (environment, profile, instance/task role); Google credentials from
Application Default Credentials. Every name below is a resource the worker's identity must be
allowed to use (README: the IAM permissions of each backend).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Self

from pydantic import Field, model_validator

from workflows.policy import Duration
from workflows.triggers import StrictModel

Tags = dict[
    Annotated[str, Field(min_length=1, max_length=128)],
    Annotated[str, Field(max_length=256)],
]
# A key prefix inside a bucket: no leading or trailing slash.
KeyPrefix = Annotated[str, Field(pattern=r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$")]

# ---- AWS -----------------------------------------------------------------------------------

S3Bucket = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
AwsRegion = Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")]
RoleArn = Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")]
SnsTopicArn = Annotated[
    str, Field(pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")
]
# SageMaker resource names: letters, digits and hyphens, at most 63 characters.
SageMakerName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")]
ImageUri = Annotated[str, Field(min_length=1, max_length=255)]
InstanceType = Annotated[str, Field(pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")]


class ScheduledScaling(StrictModel):
    """An Application Auto Scaling scheduled action: capacity bounds before a known peak."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,200}$")]
    # Application Auto Scaling's syntax: `cron(0 8 ? * MON-FRI *)`, `rate(1 day)`, `at(...)`.
    schedule: Annotated[str, Field(pattern=r"^(cron|rate|at)\(.+\)$")]
    timezone: str = "UTC"
    min_capacity: Annotated[int, Field(ge=1)]
    max_capacity: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_capacity > self.max_capacity:
            raise ValueError("min_capacity must not exceed max_capacity")
        return self


class AwsAutoscaling(StrictModel):
    """Target tracking on each production variant, applied before the variant takes traffic."""

    min_capacity: Annotated[int, Field(ge=1)] = 1
    max_capacity: Annotated[int, Field(ge=1)] = 4
    # SageMakerVariantInvocationsPerInstance (per minute): the predefined metric AWS recommends.
    invocations_per_instance: Annotated[float, Field(gt=0)] = 1000.0
    # Optional extra policies on the variant's CPU / GPU utilisation (percent).
    cpu_utilization: Annotated[float, Field(gt=0, le=100)] | None = None
    gpu_utilization: Annotated[float, Field(gt=0, le=100)] | None = None
    scale_in_cooldown: Duration = timedelta(minutes=5)
    scale_out_cooldown: Duration = timedelta(minutes=1)
    scheduled: list[ScheduledScaling] = []

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_capacity > self.max_capacity:
            raise ValueError("min_capacity must not exceed max_capacity")
        return self


class SageMakerSettings(StrictModel):
    region: AwsRegion
    # The execution role SageMaker assumes for training jobs and models.
    role_arn: RoleArn
    # Run data, training inputs and outputs, model artifacts and audit records live under
    # s3://<bucket>/<prefix>/.
    bucket: S3Bucket
    prefix: KeyPrefix = "adaptive-retraining"
    # Training: a training job on this image (script mode: it runs our entry module), or, when
    # `pipeline_name` is set, an execution of that SageMaker Pipeline with our parameters.
    training_image: ImageUri
    training_instance_type: InstanceType = "ml.m5.large"
    training_instance_count: Annotated[int, Field(ge=1, le=100)] = 1
    training_volume_gb: Annotated[int, Field(ge=1, le=16384)] = 30
    pipeline_name: SageMakerName | None = None
    # Serving: one endpoint, one production variant per registry version (`v3`, `v4`).
    endpoint_name: SageMakerName
    inference_image: ImageUri
    instance_type: InstanceType = "ml.m5.large"
    initial_instance_count: Annotated[int, Field(ge=1)] = 1
    autoscaling: AwsAutoscaling | None = AwsAutoscaling()
    # Reviewer and coordinator notifications are also published here.
    sns_topic_arn: SnsTopicArn | None = None
    # CloudWatch namespace of our own per-variant quality metrics (PutMetricData).
    metrics_namespace: Annotated[str, Field(pattern=r"^[A-Za-z0-9_./#:-]{1,255}$")] = (
        "AdaptiveRetraining"
    )
    # Extra chargeback tags on every resource (model, loop id and trigger are always tagged).
    tags: Tags = {}


# ---- Google Cloud --------------------------------------------------------------------------

GcsBucketUri = Annotated[str, Field(pattern=r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")]
GcpProject = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")]
GcpLocation = Annotated[str, Field(pattern=r"^[a-z]+-[a-z]+\d$")]
MachineType = Annotated[str, Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)+$")]
VertexDisplayName = Annotated[str, Field(min_length=1, max_length=128)]
Labels = dict[
    Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")],
    Annotated[str, Field(pattern=r"^[a-z0-9_-]{0,63}$")],
]


class VertexSettings(StrictModel):
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

    @model_validator(mode="after")
    def _replicas(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self
