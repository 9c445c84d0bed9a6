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
from workflows.spec.common import (
    CaptureSettings,
    CloudSettings,
    ImageUri,
    KeyPrefix,
    PriceTable,
    S3Uri,
    ScheduledScaling,
    Tags,
)

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


# SageMaker training list prices (USD per instance-hour, on-demand, us-east-1) used when the
# spec's `training_prices` does not name the instance type. Set your region's (or your
# contract's) prices in the spec: these are documented defaults, not a price feed.
DEFAULT_TRAINING_PRICES: dict[str, float] = {
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.m5.4xlarge": 0.922,
    "ml.c5.xlarge": 0.204,
    "ml.c5.2xlarge": 0.408,
    "ml.g4dn.xlarge": 0.736,
    "ml.g5.xlarge": 1.408,
    "ml.p3.2xlarge": 3.825,
}


class AwsAutoscaling(StrictModel):
    """Target tracking on each production variant, applied before the variant takes traffic.

    CPU and GPU targets are in the metric's own units: SageMaker publishes `CPUUtilization` and
    `GPUUtilization` summed over the instance's cores and GPUs (0-400 on a 4-vCPU instance), so
    a target of 70% of each of 4 vCPUs is 280.
    """

    min_capacity: Annotated[int, Field(ge=1)] = 1
    max_capacity: Annotated[int, Field(ge=1)] = 4
    # SageMakerVariantInvocationsPerInstance (per minute): the predefined metric AWS recommends.
    invocations_per_instance: Annotated[float, Field(gt=0)] = 1000.0
    # Optional extra policies on the variant's CPU / GPU utilisation, summed over cores / GPUs.
    cpu_utilization: Annotated[float, Field(gt=0, le=100 * 192)] | None = None
    gpu_utilization: Annotated[float, Field(gt=0, le=100 * 16)] | None = None
    scale_in_cooldown: Duration = timedelta(minutes=5)
    scale_out_cooldown: Duration = timedelta(minutes=1)
    scheduled: list[ScheduledScaling] = []

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_capacity > self.max_capacity:
            raise ValueError("min_capacity must not exceed max_capacity")
        return self


class SageMakerCapture(CaptureSettings):
    """Data Capture on every endpoint config we create (kept through rollouts and rollbacks),
    and where Model Monitor's ground truth lands."""

    # SageMaker writes `<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl`; default
    # `s3://<bucket>/<prefix>/capture`.
    destination: S3Uri | None = None
    # Ground truth in Model Monitor's merge format under `<ground_truth>/yyyy/mm/dd/hh/*.jsonl`;
    # default `s3://<bucket>/<prefix>/ground-truth`.
    ground_truth: S3Uri | None = None
    # Content types captured as text rather than base64 (SageMaker's CaptureContentTypeHeader).
    csv_content_types: Annotated[list[str], Field(min_length=1, max_length=10)] = ["text/csv"]
    json_content_types: Annotated[list[str], Field(min_length=1, max_length=10)] = [
        "application/json"
    ]


class SageMakerModelMonitor(StrictModel):
    """SageMaker's own Model Monitor, on request: a baseline job on the baseline holdout and a
    DataQuality monitoring schedule on the endpoint's captured data."""

    # The region's Model Monitor analyzer image (`sagemaker-model-monitor-analyzer`).
    image_uri: ImageUri
    instance_type: InstanceType = "ml.m5.xlarge"
    # Application of Model Monitor's schedule expression: hourly by default.
    schedule: Annotated[str, Field(pattern=r"^cron\(.+\)$")] = "cron(0 * ? * * *)"


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
    # Data Capture and ground truth: what the drift check, the performance monitor and the
    # canary read (None: no capture; the canary then has CloudWatch alone).
    capture: SageMakerCapture | None = SageMakerCapture()
    # Managed spot training (the cost is then BillableTimeInSeconds, which spot shortens).
    managed_spot: bool = False
    max_spot_wait: Duration | None = None
    # USD per instance-hour by instance type, over DEFAULT_TRAINING_PRICES.
    training_prices: PriceTable = {}
    # SageMaker Model Monitor (baseline + DataQuality schedule); None: our own checks only.
    model_monitor: SageMakerModelMonitor | None = None

    def capture_destination(self) -> str:
        if self.capture is not None and self.capture.destination:
            return self.capture.destination.rstrip("/")
        return f"s3://{self.bucket}/{self.prefix}/capture"

    def ground_truth_prefix(self) -> str:
        if self.capture is not None and self.capture.ground_truth:
            return self.capture.ground_truth.rstrip("/")
        return f"s3://{self.bucket}/{self.prefix}/ground-truth"

    def training_price(self, instance_type: str) -> float | None:
        """USD per instance-hour of a training instance type; None when no table names it."""
        return {**DEFAULT_TRAINING_PRICES, **self.training_prices}.get(instance_type)

    def monitoring_jobs(self) -> list[str]:
        # Model Monitor's schedule is named after the endpoint (activities/aws/model_monitor.py).
        return [f"{self.endpoint_name}-data-quality"] if self.model_monitor else []

    @model_validator(mode="after")
    def _spot(self) -> Self:
        if self.max_spot_wait is not None and not self.managed_spot:
            raise ValueError("max_spot_wait needs managed_spot = true")
        return self
