"""The endpoint's request bodies, validated at the edge with one clear message per refusal.

Features are checked against the types the model was trained with (the baseline holdout's
Arrow schema): integer columns take integers (an integral number such as `3.0` too, never a
boolean), floating columns any finite number, boolean columns booleans, string columns
strings. Nothing is coerced silently: `"3"` is not a number and `NaN` is not JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workflows.common.messages import MAX_INT_DIGITS, check_value
from workflows.rollout.models import VariantName, Weight
from workflows.spec.models import ModelSpec

REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MAX_LABELS = 10_000
# Problems listed in one message; a request with thousands of bad rows says how many more.
_MAX_LISTED = 20

RequestId = Annotated[str, Field(pattern=REQUEST_ID_PATTERN)]
FeatureValue = int | float | bool | str
Kind = Literal["integer", "number", "boolean", "string"]


class BadRequest(Exception):
    """A refused request: its HTTP status, a metric reason and the message the caller reads."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def parse_json(body: bytes) -> Any:
    """The JSON document, refusing the NaN/Infinity tokens Python's parser would accept,
    integers of more than MAX_INT_DIGITS digits, nesting beyond MAX_DEPTH and lone surrogates
    (which no JSON encoder can write back): a 400, never a 500 further down."""
    try:
        document = json.loads(body, parse_constant=_refuse_constant, parse_int=_bounded_int)
        check_value(document, "the body")
    except ValueError as err:  # JSONDecodeError, bad UTF-8, our refusals
        raise BadRequest(400, "malformed_json", f"the body is not valid JSON: {err}") from None
    except RecursionError:
        raise BadRequest(400, "malformed_json", "the body's JSON is nested too deeply") from None
    return document


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON number")


def json_object(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise BadRequest(
            400, "not_an_object", f"the body must be a JSON object, got {_json_type(document)}"
        )
    return document


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _listed(problems: list[str]) -> str:
    shown = "; ".join(problems[:_MAX_LISTED])
    more = len(problems) - _MAX_LISTED
    return f"{shown}; and {more} more" if more > 0 else shown


def describe(err: ValidationError) -> str:
    """`field.path: message` per problem, without pydantic's URLs."""
    problems = []
    for item in err.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "(body)"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{location}: {message}")
    return _listed(problems)


# ---- features ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureType:
    name: str
    kind: Kind
    # The column type in the 1-row frame and in the capture files (the training type).
    arrow: pa.DataType
    low: int | None = None
    high: int | None = None


def _feature_type(field: pa.Field) -> FeatureType | None:
    value_type = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
    if pa.types.is_boolean(value_type):
        return FeatureType(field.name, "boolean", field.type)
    if pa.types.is_integer(value_type):
        bits = value_type.bit_width
        signed = pa.types.is_signed_integer(value_type)
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        return FeatureType(field.name, "integer", field.type, low, high)
    if pa.types.is_floating(value_type):
        return FeatureType(field.name, "number", field.type)
    if pa.types.is_string(value_type) or pa.types.is_large_string(value_type):
        return FeatureType(field.name, "string", field.type)
    return None


class FeatureSchema:
    """The model's features in spec order, typed as in the reference (training) schema."""

    def __init__(self, spec: ModelSpec, reference: pa.Schema) -> None:
        missing = [name for name in spec.feature_names if name not in reference.names]
        if missing:
            raise ValueError(f"the baseline holdout lacks features {missing}")
        types: list[FeatureType] = []
        unsupported: list[str] = []
        for name in spec.feature_names:
            field = reference.field(name)
            found = _feature_type(field)
            if found is None:
                unsupported.append(f"{name} ({field.type})")
            else:
                types.append(found)
        if unsupported:
            raise ValueError(
                "the endpoint takes integer, floating, boolean and string features from JSON; "
                f"unsupported: {', '.join(unsupported)}"
            )
        self.types = types
        self.names = [t.name for t in types]
        self.arrow_schema = pa.schema([pa.field(t.name, t.arrow) for t in types])
        self._known = frozenset(self.names)

    def coerce(self, raw: dict[str, Any]) -> dict[str, FeatureValue]:
        """Every feature, typed; a BadRequest listing every problem otherwise."""
        missing = [name for name in self.names if name not in raw]
        unknown = sorted(name for name in raw if name not in self._known)
        problems: list[str] = []
        if missing:
            problems.append(f"missing features: {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown features: {', '.join(unknown)}")
        values: dict[str, FeatureValue] = {}
        wrong: list[str] = []
        for feature in self.types:
            if feature.name not in raw:
                continue
            value, problem = _coerce(feature, raw[feature.name])
            if problem is None:
                values[feature.name] = value
            else:
                wrong.append(f"{feature.name}: {problem}")
        if problems or wrong:
            reason = (
                "missing_features"
                if missing
                else "unknown_features"
                if unknown
                else "invalid_feature_value"
            )
            raise BadRequest(422, reason, _listed([*problems, *wrong]))
        return values


def _coerce(feature: FeatureType, value: Any) -> tuple[FeatureValue, str | None]:
    shown = _shown(value)
    if feature.kind == "boolean":
        if isinstance(value, bool):
            return value, None
        return False, f"must be a boolean, got {shown}"
    if feature.kind == "string":
        if isinstance(value, str):
            return value, None
        return "", f"must be a string, got {shown}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        noun = "an integer" if feature.kind == "integer" else "a number"
        return 0, f"must be {noun}, got {shown}"
    if isinstance(value, float) and not math.isfinite(value):
        return 0, f"must be finite, got {shown}"
    if feature.kind == "number":
        return float(value), None
    if isinstance(value, float) and not value.is_integer():
        return 0, f"must be an integer, got {shown}"
    number = int(value)
    assert feature.low is not None and feature.high is not None
    if not feature.low <= number <= feature.high:
        return 0, f"must lie within [{feature.low}, {feature.high}], got {shown}"
    return number, None


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({_json_type(value)})"


# ---- bodies ------------------------------------------------------------------------------


class _Body(BaseModel):
    # Strict: "3" is not a number and true is not 1; NaN/inf never reach a model.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class InvocationBody(_Body):
    features: dict[str, Any]
    request_id: RequestId | None = None


class FeedbackLabel(_Body):
    request_id: RequestId
    label: float


class FeedbackBatch(_Body):
    labels: Annotated[list[FeedbackLabel], Field(min_length=1)]


class WeightsBody(_Body):
    """PUT /admin/weights: the live split (summing to 100) and the shadow variant."""

    weights: dict[VariantName, Weight]
    shadow: VariantName | None = None
    change_id: Annotated[str, Field(min_length=1, max_length=300)]
    # Accepted so a TrafficChange can be sent as it is; a change for another model is refused.
    model: str | None = None
    endpoint_url: str | None = None

    @model_validator(mode="after")
    def _valid_split(self) -> Self:
        total = sum(self.weights.values())
        if total != 100:
            raise ValueError(f"weights must sum to 100, got {total} ({self.weights})")
        if self.shadow is not None and self.weights.get(self.shadow, 0) > 0:
            raise ValueError(f"shadow variant {self.shadow} cannot also take live traffic")
        return self

    @property
    def live(self) -> dict[str, int]:
        """The variants taking live traffic (zero weights dropped), by name."""
        return {name: weight for name, weight in sorted(self.weights.items()) if weight > 0}


def parse_invocation(document: Any) -> InvocationBody:
    body = json_object(document)
    try:
        return InvocationBody.model_validate(body)
    except ValidationError as err:
        locations = {item["loc"][0] for item in err.errors() if item["loc"]}
        reason = "invalid_request_id" if locations == {"request_id"} else "invalid_body"
        raise BadRequest(400, reason, describe(err)) from None


def parse_feedback(document: Any) -> list[FeedbackLabel]:
    """`{"request_id", "label"}` or `{"labels": [...]}` (at most MAX_LABELS), all or nothing."""
    body = json_object(document)
    if "labels" in body and isinstance(body["labels"], list) and len(body["labels"]) > MAX_LABELS:
        raise BadRequest(
            413,
            "too_many_labels",
            f"at most {MAX_LABELS} labels per request, got {len(body['labels'])}",
        )
    try:
        if "labels" in body:
            return list(FeedbackBatch.model_validate(body).labels)
        return [FeedbackLabel.model_validate(body)]
    except ValidationError as err:
        raise BadRequest(422, "invalid_feedback", describe(err)) from None


def parse_weights(document: Any, model: str) -> WeightsBody:
    body = json_object(document)
    try:
        change = WeightsBody.model_validate(body)
    except ValidationError as err:
        raise BadRequest(422, "invalid_weights", describe(err)) from None
    if change.model is not None and change.model != model:
        raise BadRequest(
            422, "invalid_weights", f"this endpoint serves {model}, not {change.model}"
        )
    return change
