"""Field types and settings shared by the cloud backends' spec settings."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from workflows.common.models import StrictModel

Tags = dict[
    Annotated[str, Field(min_length=1, max_length=128)],
    Annotated[str, Field(max_length=256)],
]

# A key prefix inside a bucket: no leading or trailing slash.
KeyPrefix = Annotated[str, Field(pattern=r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$")]

ImageUri = Annotated[str, Field(min_length=1, max_length=255)]


class CloudSettings(StrictModel):
    """What every cloud backend's settings offer the rest of the system (event routing)."""

    endpoint_name: str

    def monitoring_jobs(self) -> list[str]:
        """The platform monitoring jobs whose events name this model (none by default)."""
        return []


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


S3Uri = Annotated[str, Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$")]
GcsUri = Annotated[str, Field(pattern=r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^\s]*)?$")]
# A BigQuery table: `bq://project.dataset.table` (the form Vertex's logging config takes).
BigQueryTable = Annotated[
    str,
    Field(
        pattern=r"^bq://[a-z][a-z0-9-]{4,28}[a-z0-9]\.[A-Za-z0-9_]+\.[A-Za-z0-9_-]+$",
        max_length=2100,
    ),
]
# Hourly list prices of machines, by the platform's machine type name.
PriceTable = dict[Annotated[str, Field(min_length=1, max_length=64)], Annotated[float, Field(ge=0)]]


class CaptureSettings(StrictModel):
    """What an endpoint's captured answers mean, shared by the clouds' capture settings.

    The captured requests and ground truth are read into the capture layout
    (activities/local/capture.py) by the backend's `CaptureSource`, so the drift check, the
    performance monitor and the canary read them like the local endpoint's capture.
    """

    enabled: bool = True
    # Share of requests the platform logs (SageMaker: a whole percentage; Vertex: a rate).
    sampling_percentage: Annotated[int, Field(ge=1, le=100)] = 100
    # A classifier's single captured output is the positive-class probability (`score`: the
    # predicted class is score >= 0.5) or the predicted class itself (`class`). Outputs that
    # name their fields (`{"prediction": .., "score": ..}`) are read as named. Regressors: the
    # value.
    prediction_output: Literal["score", "class"] = "score"
