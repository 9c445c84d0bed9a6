"""What a cloud event maps to: a trigger event plus what routes it to a model."""

from __future__ import annotations

from dataclasses import dataclass

from workflows.triggers import TriggerEvent


class UnknownEventShape(ValueError):
    """The payload is none of the shapes this mapper knows (the gateway answers 400)."""


@dataclass(frozen=True)
class MappedEvent:
    event: TriggerEvent
    # What the gateway matches against registered specs to find the model: the object's uri
    # (against `data.labelled`), or the endpoint / alarm / monitoring job named by the event.
    uri: str | None = None
    endpoint: str | None = None
    alarm: str | None = None
    monitoring_job: str | None = None
