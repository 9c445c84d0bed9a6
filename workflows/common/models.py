"""Base classes of every message and state, one-line validation errors, shared field types."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)


class StrictModel(BaseModel):
    """Base for every message: unknown fields, NaN and infinities are refused at the edge."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class StateModel(BaseModel):
    """Mutable state pieces (messages are frozen; state changes in place)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=False)


def validation_problems(err: ValidationError) -> list[str]:
    """Each problem as `field.path: message`, without pydantic's URLs."""
    parts = []
    for item in err.errors(include_url=False):
        location = ".".join(str(p) for p in item["loc"]) or "(root)"
        parts.append(f"{location}: {item['msg']}")
    return parts


def describe_validation_error(err: ValidationError) -> str:
    """Every problem on one line (for logs, decisions and JSON answers); the CLI prints
    `validation_problems` one per line instead."""
    return f"invalid {err.title}: " + "; ".join(validation_problems(err))


def _known_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name such as 'Europe/Paris')"
        ) from None
    return value


# An IANA zone name, checked against the zone database.
TimeZoneName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_known_timezone)]


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> Any:
    """Accept shorthand such as "90s", "15m", "6h", "1h 30m", "2d" besides ISO 8601 and seconds."""
    if isinstance(value, str):
        text = "".join(value.split()).lower()
        if text.isdigit():
            return timedelta(seconds=int(text))
        if text and _DURATION_PART.sub("", text) == "":
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
            return timedelta(seconds=seconds)
    return value


# What the published JSON Schema of a spec says a duration is: what `parse_duration` accepts
# (shorthand, ISO 8601 as pydantic writes defaults, or seconds).
DURATION_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "string",
            "pattern": r"^\s*(\d+(\.\d+)?\s*[smhdwSMHDW]\s*)+$|^\s*\d+\s*$|^-?P",
        },
        {"type": "number", "minimum": 0},
    ],
    "description": "a duration: 90s, 15m, 6h, 1h30m, 2d, 1w, ISO 8601 (PT6H) or seconds",
}

Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), WithJsonSchema(DURATION_JSON_SCHEMA)
]


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
