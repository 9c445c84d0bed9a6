"""The worker's payload converter: the pydantic converter, except that an untyped argument it
cannot decode (or one over the message budget) reaches the handler as a `RawValue`.

With the plain converter, a signal whose JSON the parser refuses (nesting beyond its limit, a
lone surrogate, an integer of thousands of digits) is dropped by the SDK with a log line, and
an update's payload is refused as "Failed decoding arguments". Our handlers take untyped
arguments and turn a `RawValue` into a recorded, explained refusal
(workflows/common/messages.py). Typed arguments (activity results, workflow inputs) decode
exactly as before: only `Any` and untyped positions are tolerant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.common import RawValue
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter

from workflows.common.messages import MAX_MESSAGE_BYTES


class TolerantPayloadConverter(PydanticPayloadConverter):
    def from_payloads(
        self, payloads: Sequence[Payload], type_hints: list[type] | None = None
    ) -> list[Any]:
        hints: list[Any] = list(type_hints or [])
        hints += [None] * (len(payloads) - len(hints))
        values = []
        for payload, hint in zip(payloads, hints, strict=False):
            if hint is not None and hint is not Any:
                values.extend(super().from_payloads([payload], [hint]))
                continue
            if payload.ByteSize() > MAX_MESSAGE_BYTES:
                values.append(RawValue(payload))
                continue
            try:
                values.extend(super().from_payloads([payload], None))
            except Exception:  # anything undecodable is the handler's to refuse, with a reason
                values.append(RawValue(payload))
        return values


worker_data_converter = DataConverter(payload_converter_class=TolerantPayloadConverter)


def with_worker_converter(client: Client) -> Client:
    """The same connection, decoding workflow messages with the tolerant converter."""
    if client.data_converter.payload_converter_class is TolerantPayloadConverter:
        return client
    config = client.config()
    config["data_converter"] = worker_data_converter
    return Client(**config)
