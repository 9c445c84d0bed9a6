"""The vertex backend's settings (`ModelSpec.vertex`). No secret ever goes here: credentials are
Application Default Credentials (docs/clouds.md: the IAM roles it needs).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Self

from pydantic import Field, model_validator

from workflows.common.models import Duration, StrictModel, TimeZoneName
from workflows.spec.common import (
    BigQueryTable,
    CaptureSettings,
    CloudSettings,
    GcsUri,
    ImageUri,
    KeyPrefix,
    PriceTable,
)

GcsBucketUri = Annotated[str, Field(pattern=r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")]


GcpProject = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")]


GcpLocation = Annotated[str, Field(pattern=r"^[a-z]+-[a-z]+\d$")]


MachineType = Annotated[str, Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)+$")]


VertexDisplayName = Annotated[str, Field(min_length=1, max_length=128)]


Labels = dict[
    Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")],
    Annotated[str, Field(pattern=r"^[a-z0-9_-]{0,63}$")],
]


# Vertex AI custom training prices (USD per node-hour, us-central1) used when the spec's
# `training_prices` does not name the machine type: documented defaults, not a price feed.
DEFAULT_TRAINING_PRICES: dict[str, float] = {
    "n1-standard-2": 0.109,
    "n1-standard-4": 0.2185,
    "n1-standard-8": 0.437,
    "n1-standard-16": 0.874,
    "n1-highmem-8": 0.5442,
    "e2-standard-4": 0.1541,
    "e2-standard-8": 0.3082,
    "n2-standard-8": 0.4483,
}

# Cloud Monitoring metrics Vertex autoscales a deployed model on.
CPU_METRIC = "aiplatform.googleapis.com/prediction/online/cpu/utilization"
GPU_METRIC = "aiplatform.googleapis.com/prediction/online/accelerator/duty_cycle"


PubSubTopic = Annotated[
    str,
    Field(
        pattern=r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/topics/[A-Za-z][A-Za-z0-9_.~+%-]+$",
        max_length=300,
    ),
]


class VertexCapture(CaptureSettings):
    """Request-response logging of the endpoint to BigQuery, and where ground truth lands."""

    # The logging table; default `bq://<project>.adaptive_retraining.<endpoint name>_requests`.
    bigquery_table: BigQueryTable | None = None
    # Ground truth: a BigQuery table (`request_id`, `label`, `received_at`) or a gs:// prefix of
    # `yyyy/mm/dd/hh/*.jsonl` files in SageMaker Model Monitor's merge format.
    ground_truth: BigQueryTable | GcsUri | None = None
    # The field of each instance that carries the caller's request id (the ground truth's key);
    # an instance without it is keyed by Vertex's request id and its position.
    id_field: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.-]{0,127}$")] = "request_id"


class ScheduledReplicas(StrictModel):
    """Our own scheduled pre-scaling (Vertex has none): from each `cron` start, for `duration`,
    every deployed model keeps at least `min_replicas`."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]
    # Five-field cron (minute hour day-of-month month day-of-week), in `timezone`.
    cron: Annotated[str, Field(pattern=r"^\S+ \S+ \S+ \S+ \S+$")]
    timezone: TimeZoneName = "UTC"
    duration: Duration = timedelta(hours=2)
    min_replicas: Annotated[int, Field(ge=1)]


class VertexAutoscaling(StrictModel):
    """Autoscaling metric specs of every deployed model (targets in the metric's own unit:
    percent of CPU / of accelerator duty cycle), and scheduled minimum replicas."""

    cpu_utilization: Annotated[int, Field(ge=1, le=100)] | None = 60
    gpu_duty_cycle: Annotated[int, Field(ge=1, le=100)] | None = None
    scheduled: list[ScheduledReplicas] = []

    def metric_specs(self) -> dict[str, int]:
        specs = {CPU_METRIC: self.cpu_utilization, GPU_METRIC: self.gpu_duty_cycle}
        return {name: target for name, target in specs.items() if target is not None}


class FeatureThreshold(StrictModel):
    """Vertex Model Monitoring thresholds of one feature (distance: L-infinity for categorical,
    Jensen-Shannon for numeric features, as Vertex computes them)."""

    skew: Annotated[float, Field(gt=0, le=1)] | None = None
    drift: Annotated[float, Field(gt=0, le=1)] | None = None


class VertexModelMonitoring(StrictModel):
    """Vertex AI Model Monitoring on request: a ModelDeploymentMonitoringJob on the endpoint,
    skew against the training data and drift between serving windows, per feature."""

    interval: Duration = timedelta(hours=1)
    # Default threshold of every feature not named in `features`.
    default_skew: Annotated[float, Field(gt=0, le=1)] = 0.3
    default_drift: Annotated[float, Field(gt=0, le=1)] = 0.3
    features: dict[Annotated[str, Field(min_length=1, max_length=128)], FeatureThreshold] = {}
    # Where Vertex emails its alerts (optional; our notifications go through Pub/Sub).
    alert_emails: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = []
    sampling_rate: Annotated[float, Field(gt=0, le=1)] = 1.0


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
    # Request-response logging to BigQuery and ground truth (None: no capture).
    capture: VertexCapture | None = VertexCapture()
    autoscaling: VertexAutoscaling = VertexAutoscaling()
    # Every notification of the model is also published to this topic.
    pubsub_topic: PubSubTopic | None = None
    # USD per node-hour by machine type, over DEFAULT_TRAINING_PRICES.
    training_prices: PriceTable = {}
    # Create (and read back) a Model Monitoring job on the endpoint; `monitoring_job` instead
    # reads an existing one.
    model_monitoring: VertexModelMonitoring | None = None

    def monitoring_jobs(self) -> list[str]:
        if self.monitoring_job:
            return [self.monitoring_job]
        return [self.monitoring_job_name()] if self.model_monitoring else []

    def monitoring_job_name(self) -> str:
        """The display name of the Model Monitoring job we create for the endpoint."""
        return f"{self.endpoint_name}-monitoring"[:128]

    def logging_table(self) -> str:
        """The request-response logging table, as `project.dataset.table`."""
        if self.capture is not None and self.capture.bigquery_table:
            return self.capture.bigquery_table.removeprefix("bq://")
        table = re.sub(r"[^A-Za-z0-9_]+", "_", self.endpoint_name).strip("_")[:900] or "endpoint"
        return f"{self.project}.adaptive_retraining.{table}_requests"

    def ground_truth_source(self) -> str:
        """Ground truth: `bq://...` or `gs://...`; default a prefix in the staging bucket."""
        if self.capture is not None and self.capture.ground_truth:
            return self.capture.ground_truth.rstrip("/")
        return f"{self.staging_bucket}/{self.prefix}/ground-truth"

    def training_price(self, machine_type: str) -> float | None:
        return {**DEFAULT_TRAINING_PRICES, **self.training_prices}.get(machine_type)

    @model_validator(mode="after")
    def _replicas(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self
