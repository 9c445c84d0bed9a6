"""Untrusted message payloads: what a signal or an update carries, turned into one of our models
or into a one-line reason to refuse it.

Anyone who can reach the Temporal frontend can send any payload to any handler: nothing, two
arguments, `null`, binary data, JSON the worker's parser refuses (nesting beyond its limit, a
lone surrogate, an integer of 5,000 digits), several megabytes. Handlers therefore take their
arguments untyped (`*payload: Any`): the SDK hands them whatever it could decode, and the
worker's payload converter (workers/converter.py) hands over a `RawValue` for what it could not
decode or what is over `MAX_MESSAGE_BYTES`, instead of dropping the signal or failing the
task. `one_message` turns that into the model or a `ValueError` whose text is what the person
sees: in the Web UI's Update dialog, or as an ignored signal in the workflow's details.

Deterministic and dependency-free (stdlib json, pydantic): safe inside the workflow sandbox.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.common import RawValue

from workflows.common.models import StrictModel, describe_validation_error

M = TypeVar("M", bound=BaseModel)

# One message's budget: far under Temporal's 2 MB payload limit, so that accepting an update
# (whose request the workflow task echoes back) can never exceed it.
MAX_MESSAGE_BYTES = 1024 * 1024
# JSON nesting our messages never need more than; deeper is refused before it costs anything.
MAX_DEPTH = 64
# Integers beyond this many digits are refused (Python refuses beyond 4,300 anyway).
MAX_INT_DIGITS = 64


def fields_hint(model: type[BaseModel]) -> str:
    """`{reviewer, comment}`: the fields a message of `model` takes."""
    return "{" + ", ".join(model.model_fields) + "}"


def one_message(payload: tuple[Any, ...], model: type[M], what: str) -> M:
    """The single argument of a signal or update as a `model`, or ValueError saying why not."""
    expected = f"one JSON object {fields_hint(model)}"
    if len(payload) != 1:
        raise ValueError(f"{what}: expected {expected}, got {len(payload)} arguments")
    value = payload[0]
    if isinstance(value, model):
        return value
    if isinstance(value, RawValue):
        value = decode_raw(value, what)
    if value is None:
        raise ValueError(f"{what}: expected {expected}, got null")
    if isinstance(value, bytes | bytearray):
        raise ValueError(f"{what}: expected {expected}, got {len(value)} bytes of binary data")
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected {expected}, got {_json_type(value)}")
    try:
        return model.model_validate(value)
    except ValidationError as err:
        raise ValueError(f"{what}: {describe_validation_error(err, model)}") from None


def decode_raw(raw: RawValue, what: str) -> Any:
    """A payload the worker's converter could not (or would not) decode, decoded here with the
    standard library and our limits; ValueError with the reason when it cannot be used."""
    payload = raw.payload
    size = payload.ByteSize()
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"{what}: the payload is {size} bytes; at most {MAX_MESSAGE_BYTES} are accepted"
        )
    encoding = payload.metadata.get("encoding", b"").decode("utf-8", "replace")
    if encoding == "binary/null":
        return None
    if encoding == "binary/plain":
        return bytes(payload.data)
    if encoding != "json/plain":
        raise ValueError(f"{what}: unsupported payload encoding {encoding[:40]!r}; send JSON")
    return loads_bounded(bytes(payload.data), what)


def loads_bounded(data: bytes, what: str) -> Any:
    """JSON with our limits on depth, integer size and text (valid UTF-8, no lone surrogates)."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"{what}: JSON nested too deeply (at most {MAX_DEPTH} levels)") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{what}: not valid JSON ({str(err)[:200]})") from None
    check_value(value, what)
    return value


def check_value(value: Any, what: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and text that is not valid Unicode (a lone surrogate
    cannot be written back to JSON, so it would fail the task that records it)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"{what}: JSON nested too deeply (at most {MAX_DEPTH} levels)")
        if isinstance(item, str):
            _check_text(item, what)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, what)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what}: text contains a lone surrogate (not valid Unicode)") from None


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def split_array_items(data: bytes, key: str) -> list[bytes] | None:
    """The raw items of the array under `key` in a top-level JSON object, found by scanning
    (no recursion, nothing decoded), so that one undecodable item of a batch does not make the
    others unreadable. None when the text is not shaped like `{"<key>": [...]}`."""
    text = data
    n = len(text)
    depth, i = 0, 0
    last_string: bytes | None = None
    current_key: bytes | None = None
    wanted = key.encode()
    items: list[bytes] | None = None
    inside = False
    start = 0
    while i < n:
        c = text[i]
        if c == 0x22:  # '"': skip the string, remembering it (it may be a key)
            j = i + 1
            while j < n and text[j] != 0x22:
                j += 2 if text[j] == 0x5C else 1  # '\\' escapes the next byte
            if j >= n:
                return None
            last_string = text[i + 1 : j]
            i = j + 1
            continue
        if c in (0x7B, 0x5B):  # '{' '['
            if depth == 1 and c == 0x5B and current_key == wanted and items is None:
                items, inside, start = [], True, i + 1
            depth += 1
        elif c in (0x7D, 0x5D):  # '}' ']'
            depth -= 1
            if inside and depth == 1:
                last = text[start:i].strip()
                if last:
                    items.append(last)  # type: ignore[union-attr]
                inside = False
            if depth < 0:
                return None
        elif c == 0x3A and depth == 1:  # ':' after a key of the top-level object
            current_key = last_string
        elif c == 0x2C:  # ','
            if inside and depth == 2:
                items.append(text[start:i].strip())  # type: ignore[union-attr]
                start = i + 1
            elif depth == 1:
                current_key = None
        i += 1
    return items if depth == 0 and not inside else None


class Unreadable(StrictModel):
    """An item of a batch that could not be decoded: recorded as refused, with the reason."""

    error: str


def batch_items(
    payload: tuple[Any, ...], key: str, max_items: int, what: str, noun: str = "items"
) -> list[Any]:
    """The items of `{"<key>": [...]}` (1 to `max_items`), each decoded on its own when the
    whole could not be: an unreadable item becomes `Unreadable` and the others stay usable.
    ValueError when the batch itself is unusable."""
    shape = f'one object {{"{key}": [...]}} with 1 to {max_items} {noun}'
    if len(payload) != 1:
        raise ValueError(f"{what} takes {shape}, got {len(payload)} arguments")
    value = payload[0]
    if isinstance(value, RawValue):
        raw = value
        try:
            value = decode_raw(raw, what)
        except ValueError as err:
            items = None
            if raw.payload.ByteSize() <= MAX_MESSAGE_BYTES:
                items = split_array_items(bytes(raw.payload.data), key)
            if items is None:
                raise
            value = {key: [_item(item, what) for item in items]}
            if not items:
                raise ValueError(str(err)) from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} takes {shape}")
    items_found = value.get(key)
    if not isinstance(items_found, list) or not 1 <= len(items_found) <= max_items:
        raise ValueError(f"{what} takes {shape}")
    extra = sorted(set(value) - {key})
    if extra:
        raise ValueError(f"{what}: unknown field {extra[0]!r}; expected {{{key}}}")
    return items_found


def _item(data: bytes, what: str) -> Any:
    try:
        return loads_bounded(data, what)
    except ValueError as err:
        return Unreadable(error=str(err))
