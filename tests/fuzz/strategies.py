"""What an attacker (or a bad day) sends to a message handler or an HTTP route: any JSON, JSON the
worker's parser refuses, binary data, null, nothing, twice, near-misses of the real messages."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue


def raw_json(data: bytes) -> RawValue:
    """A payload as a plain client would send it, whatever its bytes."""
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=data))


def raw(encoding: bytes, data: bytes) -> RawValue:
    return RawValue(Payload(metadata={"encoding": encoding}, data=data))


LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)

# JSON the SDK's (pydantic_core) parser refuses, or which no encoder could write back.
HOSTILE_BYTES = [
    b'"\\ud800"',
    b'{"kind": "manual", "event_id": "\\udfff"}',
    b"[" * 300 + b"]" * 300,
    b"[" * 5000 + b"]" * 5000,
    b'{"kind": "manual", "metadata": {"k": ' + b"7" * 5000 + b"}}",
    b'{"events": [' + b'{"kind": "manual"},' * 3 + b'"\\ud800"]}',
    b"not json",
    b'{"kind": "manual"',
    b'{"a": NaN}',
    b"\xff\xfe\x00",
    b"",
]
HOSTILE = st.sampled_from(HOSTILE_BYTES).map(raw_json) | st.sampled_from(
    [raw(b"binary/plain", b"\x00\x01binary"), raw(b"binary/null", b""), raw(b"x/unknown", b"{}")]
)
# Over the message budget (1 MiB) yet under Temporal's 2 MB: refused by the validators.
OVERSIZED = st.just(raw_json(b'{"reason": "' + b"x" * 1_200_000 + b'"}'))


def near(valid: dict[str, Any], mutations: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A real message with one field made wrong (a type, a value, an unknown field)."""
    keys = st.sampled_from(sorted(mutations))
    return keys.map(lambda key: {**valid, key: mutations[key]})


TRIGGER_NEAR = near(
    {"kind": "manual", "event_id": "fuzz"},
    {
        "priority": "1",
        "kind": "sometimes",
        "reason": "unknown field",
        "occurred_at": "2026-01-01T00:00:00",
        "metadata": {"k": "x" * 9000},
        "drift": {"score": 0.5},
        "source": "",
    },
) | st.sampled_from(
    [
        {"kind": "manual", "priority": True},
        {"kind": "drift", "drift": {"score": "inf"}},
        {"kind": "drift", "drift": {"score": 0.4, "features": ["f" * 201]}},
        {"kind": "data_arrived", "data": {"uri": "s3://x", "rows": 1e20}},
        {"kind": "alarm", "alarm": {"name": "a", "state": []}},
    ]
)
POLICY_NEAR = st.sampled_from(
    [
        {"dedup_window": "1000000d"},
        {"cooldown": "99999999999d"},
        {"max_wait": "3000000d"},
        {"cooldown": "٣h"},
        {"cooldown": True},
        {"batch_size": "10"},
        {"batch_size": 1e20},
        {"auto_retrain": "yes"},
        {"severity_cut_points": [0.5, 0.1, 0.9]},
        {"cooldwn": "1h"},
        {"cost": {"hourly_rate": -1}},
        {"timezone": "Mars/Olympus"},
    ]
)
REVIEW_NEAR = near(
    {"reviewer": "fuzz", "comment": "x"},
    {"reason": "unknown field", "reviewer": 7, "comment": "c" * 2001},
) | st.just({"comment": "no reviewer"})
COMMAND_NEAR = near(
    {"operator": "fuzz", "reason": "x"},
    {"why": "unknown field", "operator": "", "reason": "r" * 2001},
)
PAUSE_NEAR = near({"by": "fuzz", "reason": "x"}, {"who": "?", "by": 7, "reason": "r" * 501})


def arguments(
    *values: st.SearchStrategy[Any], oversized: bool = False
) -> st.SearchStrategy[tuple[Any, ...]]:
    """A handler's arguments: usually one, sometimes none or two. `oversized`: one argument
    may be over the message budget (never two: an update over Temporal's 2 MiB in all cannot be
    refused without failing the task, see docs/operations.md#security)."""
    value = st.one_of(JSON, HOSTILE, *values)
    single = st.one_of(value, OVERSIZED) if oversized else value
    return st.one_of(
        st.tuples(single),
        st.tuples(single),
        st.tuples(value),
        st.just(()),
        st.tuples(value, value),
    )


def describe(args: tuple[Any, ...]) -> str:
    """A short label of the arguments for failure messages."""
    shown = []
    for arg in args:
        if isinstance(arg, RawValue):
            shown.append(f"raw {arg.payload.metadata.get('encoding')!r} {arg.payload.data[:40]!r}")
        else:
            shown.append(repr(arg)[:80])
    return f"({', '.join(shown)})"
