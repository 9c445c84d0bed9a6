"""What a cloud event maps to: a trigger event plus what routes it to a model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from workflows.common.models import describe_validation_error
from workflows.coordinator.triggers import TriggerEvent


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


def value_at(value: Any, path: str) -> Any:
    """`value["a"]["b"]` for the path `a.b`; a ValueError naming the path when it is absent."""
    for part in path.split("."):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected an object at {part!r}")
        if part not in value or value[part] is None:
            raise ValueError(f"{path}: missing")
        value = value[part]
    return value


def text_at(value: Any, path: str) -> str:
    found = value_at(value, path)
    if not isinstance(found, str) or not found:
        raise ValueError(f"{path}: expected a non-empty string, got {type(found).__name__}")
    return found


def rfc3339_time(text: str, path: str) -> datetime:
    """An RFC 3339 timestamp (`Z` or an offset; naive ones are taken as UTC)."""
    try:
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{path}: not an RFC 3339 time: {text!r}") from None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def json_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def trigger_event(**fields: Any) -> TriggerEvent:
    """A validated trigger event; a ValueError with one line per problem otherwise."""
    try:
        return TriggerEvent(**fields)
    except ValidationError as err:
        raise ValueError(describe_validation_error(err)) from None


def short_id(prefix: str, *parts: str) -> str:
    """An event id within TriggerEvent's 200 characters, stable for the same parts."""
    return f"{prefix}-{hashlib.sha256('/'.join(parts).encode()).hexdigest()[:40]}"
