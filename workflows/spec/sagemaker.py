"""The sagemaker backend's settings (`ModelSpec.sagemaker`).

No secret ever goes here: the spec travels through workflow history. AWS credentials come from
boto3's default chain (environment, profile, instance/task role). Every name below is a resource
the worker's identity must be allowed to use (docs/clouds.md: the IAM permissions it needs).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Self

from pydantic import Field, model_validator

from workflows.common.models import Duration, StrictModel
from workflows.spec.common import CloudSettings, ImageUri, KeyPrefix, ScheduledScaling, Tags

S3Bucket = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
AwsRegion = Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")]
RoleArn = Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")]
SnsTopicArn = Annotated[
    # A FIFO topic's name ends in `.fifo` (its notifications are then deduplicated by key).
    str,
    Field(
        pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:"
        r"(?:[A-Za-z0-9_-]{1,256}|[A-Za-z0-9_-]{1,251}\.fifo)$"
    ),
]
# SageMaker resource names: letters, digits and hyphens, at most 63 characters.
SageMakerName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")]
InstanceType = Annotated[str, Field(pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")]


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


class SageMakerSettings(CloudSettings):
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
