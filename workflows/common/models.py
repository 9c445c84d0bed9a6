"""Base classes of every message and state, one-line validation errors, shared field types."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, get_args
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


def validation_problems(err: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """Each problem as `field.path: message`, without pydantic's URLs. With the model, an
    unknown field names the fields it expected (`unknown field 'reason'; expected {reviewer,
    comment}`): what a person typing JSON into the Web UI needs to fix it."""
    parts = []
    for item in err.errors(include_url=False):
        path = [str(p) for p in item["loc"]]
        if item["type"] == "extra_forbidden" and path:
            expected = _fields_at(model, item["loc"][:-1])
            message = f"unknown field {path[-1]!r}"
            if expected:
                message += f"; expected {{{', '.join(expected)}}}"
            location = ".".join(path[:-1])
            parts.append(f"{location}: {message}" if location else message)
            continue
        location = ".".join(path) or "(root)"
        parts.append(f"{location}: {item['msg']}")
    return parts


def describe_validation_error(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Every problem on one line (for logs, decisions and JSON answers); the CLI prints
    `validation_problems` one per line instead."""
    return f"invalid {err.title}: " + "; ".join(validation_problems(err, model))


def _fields_at(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the (nested) model found at `loc` under `model`, best effort."""
    current: Any = model
    for step in loc:
        if isinstance(step, int):
            continue  # an index into a list: the element's model is the same
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(step)
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside `X`, `X | None`, `list[X]`, `Annotated[X, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


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


# ASCII digits only: `\d` would read "٣h" (Arabic-Indic three) as three hours.
_DURATION_PART = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)([smhdw])")


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# Every duration a person can set (cooldowns, windows, approval timeouts, bakes) is at most
# this long: ten years is already absurd for any of them, and it keeps every date computed
# from one (now + cooldown, requested_at + timeout) far inside `datetime`'s range.
MAX_DURATION = timedelta(days=3650)


def parse_duration(value: Any) -> Any:
    """Accept shorthand such as "90s", "15m", "6h", "1h 30m", "2d" besides ISO 8601 and seconds.

    Refuses what would otherwise overflow (`"99999999999d"`) or be coerced (`true`, non-ASCII
    digits) with a clear error; anything else that is not shorthand is left to pydantic."""
    if isinstance(value, bool):
        raise ValueError("a duration is text such as '6h' or a number of seconds, not true/false")
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > MAX_DURATION.total_seconds():
            raise ValueError(_too_long(value))
        return value
    if isinstance(value, str):
        text = "".join(value.split()).lower()
        if not text.isascii():
            raise ValueError(
                f"{value[:40]!r} is not a duration: use ASCII digits and a unit "
                "(s, m, h, d, w), e.g. '90s', '6h', '1h30m', or ISO 8601 such as 'PT6H'"
            )
        if text.isdigit():
            if len(text) > 12:
                raise ValueError(_too_long(text))
            return timedelta(seconds=int(text))
        if text and _DURATION_PART.sub("", text) == "":
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
            if seconds > MAX_DURATION.total_seconds():
                raise ValueError(_too_long(value))
            return timedelta(seconds=seconds)
    return value


def _too_long(value: Any) -> str:
    return (
        f"duration {str(value)[:40]!r} is too long: at most {MAX_DURATION.days} days "
        f"({MAX_DURATION.days // 365} years)"
    )


def _bounded(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("durations cannot be negative")
    if value > MAX_DURATION:
        raise ValueError(_too_long(format_duration(value)))
    return value


def later(moment: datetime, delta: timedelta) -> datetime:
    """`moment + delta`, saturating at the end of time instead of raising OverflowError: a date
    computed from state (a timer, a deadline) must never fail a workflow task."""
    try:
        return moment + delta
    except OverflowError:
        end = datetime.max if delta > timedelta(0) else datetime.min
        return end.replace(tzinfo=moment.tzinfo)


def earlier(moment: datetime, delta: timedelta) -> datetime:
    """`moment - delta`, saturating like `later`."""
    try:
        return moment - delta
    except OverflowError:
        end = datetime.min if delta > timedelta(0) else datetime.max
        return end.replace(tzinfo=moment.tzinfo)


def scaled(delta: timedelta, factor: float) -> timedelta:
    """`delta * factor`, saturating at `timedelta.max`."""
    try:
        return delta * factor
    except OverflowError:
        return timedelta.max if (delta > timedelta(0)) == (factor > 0) else timedelta.min


# What the published JSON Schema of a spec says a duration is: what `parse_duration` accepts
# (shorthand, ISO 8601 as pydantic writes defaults, or seconds).
DURATION_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "string",
            "pattern": r"^\s*(\d+(\.\d+)?\s*[smhdwSMHDW]\s*)+$|^\s*\d+\s*$|^P",
        },
        {"type": "number", "minimum": 0, "maximum": MAX_DURATION.total_seconds()},
    ],
    "description": "a duration: 90s, 15m, 6h, 1h30m, 2d, 1w, ISO 8601 (PT6H) or seconds",
}

# Non-negative and at most MAX_DURATION: every date computed from one stays in range.
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_bounded),
    WithJsonSchema(DURATION_JSON_SCHEMA),
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
