"""Field types and settings shared by the cloud backends' spec settings."""

from __future__ import annotations

from typing import Annotated, Self

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
