"""Edge validation of the public messages: TriggerEvent (via parse_trigger) and TriggerPolicy."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from workflows.common.models import format_duration, parse_duration
from workflows.coordinator.policy import CostModel, TriggerPolicy
from workflows.coordinator.triggers import (
    MAX_METADATA_BYTES,
    AlarmState,
    Severity,
    TriggerEvent,
    TriggerKind,
    event_time,
    parse_trigger,
    severity_from_score,
)

T0 = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)


def rejected(raw: Any) -> str:
    """The message parse_trigger raises for `raw` (fails the test if it is accepted)."""
    with pytest.raises(ValueError) as info:
        parse_trigger(raw)
    return str(info.value)


def policy_error(**fields: Any) -> str:
    """The validation message for a TriggerPolicy built from `fields`."""
    with pytest.raises(ValidationError) as info:
        TriggerPolicy.model_validate(fields)
    return str(info.value)


# ------------------------------------------------------------------ valid triggers


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ({"kind": "scheduled"}, TriggerKind.SCHEDULED),
        ({"kind": "manual", "priority": 1, "source": "alice"}, TriggerKind.MANUAL),
        (
            {"kind": "data_arrived", "data": {"uri": "s3://b/k", "rows": 10}},
            TriggerKind.DATA_ARRIVED,
        ),
        ({"kind": "drift", "drift": {"severity": "high"}}, TriggerKind.DRIFT),
        ({"kind": "alarm", "alarm": {"name": "ctr-drop", "state": "OK"}}, TriggerKind.ALARM),
    ],
)
def test_valid_trigger_of_each_kind_parses(raw: dict[str, Any], kind: TriggerKind) -> None:
    """Each kind with its matching detail object (or none) is accepted."""
    assert parse_trigger(raw).kind is kind


def test_documented_ui_example_parses_with_defaults() -> None:
    """The JSON contract example of the module docstring is valid and gets the defaults."""
    event = parse_trigger(
        {
            "kind": "drift",
            "source": "monitor",
            "priority": 2,
            "drift": {"score": 0.42, "features": ["age", "income"]},
        }
    )
    assert event.drift is not None
    assert event.drift.score == 0.42
    assert event.drift.features == ["age", "income"]
    assert event.event_id is None
    assert event.metadata == {}
    assert event.alarm is None and event.data is None


def test_parse_trigger_passes_an_event_through() -> None:
    """An already-validated TriggerEvent is returned as is."""
    event = TriggerEvent(kind=TriggerKind.MANUAL)
    assert parse_trigger(event) is event


def test_alarm_state_defaults_to_firing() -> None:
    """An alarm without a state is a firing alarm."""
    event = parse_trigger({"kind": "alarm", "alarm": {"name": "latency"}})
    assert event.alarm is not None
    assert event.alarm.state is AlarmState.ALARM


def test_event_time_prefers_occurred_at() -> None:
    """event_time uses the sender's occurred_at, falling back to the receive time."""
    occurred = T0 - timedelta(minutes=5)
    assert event_time(TriggerEvent(kind=TriggerKind.MANUAL, occurred_at=occurred), T0) == occurred
    assert event_time(TriggerEvent(kind=TriggerKind.MANUAL), T0) == T0


# ------------------------------------------------------------------ refused triggers


def test_unknown_kind_is_refused_naming_the_field() -> None:
    """An unknown kind is refused and the message names `kind` and the allowed values."""
    message = rejected({"kind": "retrain-now"})
    assert message.startswith("invalid TriggerEvent: kind:")
    assert "data_arrived" in message


@pytest.mark.parametrize("priority", [0, 6, -1])
def test_priority_out_of_range_is_refused(priority: int) -> None:
    """Priorities outside 1..5 are refused with a message naming `priority`."""
    message = rejected({"kind": "manual", "priority": priority})
    assert "priority:" in message


@pytest.mark.parametrize("priority", [1, 5])
def test_priority_bounds_are_accepted(priority: int) -> None:
    """1 and 5 are the inclusive bounds."""
    assert parse_trigger({"kind": "manual", "priority": priority}).priority == priority


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf, -0.01])
def test_bad_drift_scores_are_refused(score: float) -> None:
    """NaN, infinities and negative scores are refused, naming drift.score."""
    message = rejected({"kind": "drift", "drift": {"score": score}})
    assert "drift.score:" in message


def test_zero_drift_score_is_accepted() -> None:
    """Zero is the smallest valid score."""
    event = parse_trigger({"kind": "drift", "drift": {"score": 0}})
    assert event.drift is not None and event.drift.score == 0


def test_drift_without_score_or_severity_is_refused() -> None:
    """A drift signal must carry a score, a severity, or both."""
    message = rejected({"kind": "drift", "drift": {"features": ["age"]}})
    assert "drift:" in message
    assert "drift needs a score, a severity, or both" in message


def test_unknown_severity_is_refused() -> None:
    """Severity is one of low/medium/high/critical."""
    assert "drift.severity:" in rejected({"kind": "drift", "drift": {"severity": "huge"}})


def test_drift_trigger_without_drift_object_is_refused() -> None:
    """kind=drift needs the `drift` object."""
    assert "a drift trigger needs the 'drift' object" in rejected({"kind": "drift"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"kind": "drift", "drift": {"score": 0.2}, "data": {"uri": "s3://x"}},
            "'data' is only allowed on data_arrived triggers",
        ),
        (
            {"kind": "scheduled", "drift": {"score": 0.2}},
            "'drift' is only allowed on drift triggers",
        ),
        (
            {"kind": "manual", "alarm": {"name": "a"}},
            "'alarm' is only allowed on alarm triggers",
        ),
        (
            {"kind": "alarm", "alarm": {"name": "a"}, "data": {"uri": "s3://x"}},
            "'data' is only allowed on data_arrived triggers",
        ),
    ],
)
def test_detail_object_of_another_kind_is_refused(raw: dict[str, Any], expected: str) -> None:
    """A detail object that does not match the kind is refused with a readable message."""
    assert expected in rejected(raw)


def test_data_arrived_without_data_is_refused() -> None:
    """kind=data_arrived needs the `data` object."""
    assert "a data_arrived trigger needs the 'data' object" in rejected({"kind": "data_arrived"})


def test_alarm_without_alarm_is_refused() -> None:
    """kind=alarm needs the `alarm` object."""
    assert "trigger needs the 'alarm' object" in rejected({"kind": "alarm"})


@pytest.mark.parametrize(
    ("data", "field"),
    [({"uri": ""}, "data.uri"), ({"uri": "s3://x", "rows": -1}, "data.rows"), ({}, "data.uri")],
)
def test_bad_data_details_are_refused(data: dict[str, Any], field: str) -> None:
    """An empty uri, negative rows or a missing uri are refused, naming the nested field."""
    assert f"{field}:" in rejected({"kind": "data_arrived", "data": data})


def metadata_of_size(size: int) -> dict[str, Any]:
    """A metadata dict whose compact JSON encoding is exactly `size` bytes."""
    overhead = len('{"k":""}')
    return {"k": "x" * (size - overhead)}


def test_metadata_at_the_limit_is_accepted() -> None:
    """Exactly MAX_METADATA_BYTES (8 KiB) of compact JSON is allowed."""
    metadata = metadata_of_size(MAX_METADATA_BYTES)
    assert parse_trigger({"kind": "manual", "metadata": metadata}).metadata == metadata


def test_oversized_metadata_is_refused() -> None:
    """One byte over 8 KiB is refused, naming metadata, the size and the limit."""
    message = rejected({"kind": "manual", "metadata": metadata_of_size(MAX_METADATA_BYTES + 1)})
    assert "metadata:" in message
    assert f"{MAX_METADATA_BYTES + 1} bytes" in message
    assert f"limit is {MAX_METADATA_BYTES}" in message


def test_non_json_metadata_is_refused() -> None:
    """Metadata values must be JSON values."""
    assert "metadata" in rejected({"kind": "manual", "metadata": {"when": object()}})


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"kind": "manual", "colour": "blue"}, "unknown field 'colour'; expected {kind, source"),
        (
            {"kind": "drift", "drift": {"score": 0.2, "p_value": 0.01}},
            "drift: unknown field 'p_value'; expected {score, severity, features",
        ),
        (
            {"kind": "data_arrived", "data": {"uri": "s3://x", "md5": "00"}},
            "data: unknown field 'md5'; expected {uri, rows, size_bytes}",
        ),
    ],
)
def test_unknown_extra_fields_are_refused(raw: dict[str, Any], field: str) -> None:
    """Unknown fields, top-level or nested, are refused and named with the fields expected
    there (what a person typing JSON into the Web UI needs)."""
    assert field in rejected(raw)


def test_naive_occurred_at_is_refused() -> None:
    """occurred_at must carry a time zone."""
    message = rejected({"kind": "manual", "occurred_at": "2024-06-03T09:00:00"})
    assert "occurred_at:" in message
    assert "timezone" in message


def test_naive_drift_window_is_refused() -> None:
    """The drift window bounds must carry a time zone."""
    raw = {"kind": "drift", "drift": {"score": 0.2, "window_start": datetime(2024, 6, 3)}}
    assert "drift.window_start:" in rejected(raw)


def test_aware_occurred_at_is_accepted() -> None:
    """An ISO string with an offset is parsed into an aware datetime."""
    event = parse_trigger({"kind": "manual", "occurred_at": "2024-06-03T11:00:00+02:00"})
    assert event.occurred_at == T0


def test_window_start_after_window_end_is_refused() -> None:
    """An anomaly window that ends before it starts is refused."""
    raw = {
        "kind": "drift",
        "drift": {"score": 0.2, "window_start": T0, "window_end": T0 - timedelta(seconds=1)},
    }
    assert "drift window_start is after window_end" in rejected(raw)


def test_empty_window_is_accepted() -> None:
    """window_start == window_end is a valid (instant) window."""
    event = parse_trigger(
        {"kind": "drift", "drift": {"score": 0.2, "window_start": T0, "window_end": T0}}
    )
    assert event.drift is not None and event.drift.window_end == T0


@pytest.mark.parametrize(
    ("raw", "type_name"), [([{"kind": "manual"}], "list"), ("manual", "str"), (None, "NoneType")]
)
def test_non_object_payloads_are_refused(raw: Any, type_name: str) -> None:
    """Lists, strings and null are not trigger objects."""
    assert rejected(raw) == f"a trigger must be a JSON object, got {type_name}"


def test_every_error_is_listed_without_urls() -> None:
    """All problems are reported at once, one per field, without pydantic's doc URLs."""
    message = rejected({"kind": "manual", "priority": 9, "source": "", "extra": 1})
    assert "priority:" in message
    assert "source:" in message
    assert "unknown field 'extra'" in message
    assert "errors.pydantic.dev" not in message


def test_trigger_events_are_immutable() -> None:
    """Messages are frozen: validated once, never mutated afterwards."""
    event = parse_trigger({"kind": "manual"})
    with pytest.raises(ValidationError):
        event.priority = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("score", "severity"),
    [
        (0.0, Severity.LOW),
        (0.0999, Severity.LOW),
        (0.1, Severity.MEDIUM),
        (0.2999, Severity.MEDIUM),
        (0.3, Severity.HIGH),
        (0.5, Severity.CRITICAL),
        (7.0, Severity.CRITICAL),
    ],
)
def test_severity_from_score_cut_points_are_inclusive(score: float, severity: Severity) -> None:
    """A score equal to a cut point has that cut point's severity."""
    assert severity_from_score(score, (0.1, 0.3, 0.5)) is severity


def test_severity_rank_orders_severities() -> None:
    """rank grows low < medium < high < critical."""
    ranks = [s.rank for s in (Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)]
    assert ranks == [0, 1, 2, 3]


# ------------------------------------------------------------------ policy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        (" 6H ", timedelta(hours=6)),
        ("PT6H", timedelta(hours=6)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        (5400, timedelta(hours=1, minutes=30)),
        (90.5, timedelta(seconds=90.5)),
        (timedelta(minutes=7), timedelta(minutes=7)),
    ],
)
def test_policy_durations(text: Any, expected: timedelta) -> None:
    """Shorthand, ISO 8601, seconds and timedeltas are all accepted for durations."""
    assert TriggerPolicy.model_validate({"cooldown": text}).cooldown == expected


def test_parse_duration_leaves_unknown_text_to_pydantic() -> None:
    """Text that is not shorthand is passed through untouched."""
    assert parse_duration("PT6H") == "PT6H"
    assert parse_duration("soon") == "soon"
    assert parse_duration(12) == 12


@pytest.mark.parametrize("text", ["soon", "5x", "-5m", "h", ""])
def test_malformed_durations_are_refused(text: str) -> None:
    """Anything that is not a duration is refused, naming the field."""
    assert "cooldown" in policy_error(cooldown=text)


def test_negative_duration_is_refused() -> None:
    """Durations cannot be negative."""
    assert "durations cannot be negative" in policy_error(cooldown=timedelta(seconds=-1))


def test_zero_cooldown_is_allowed_but_zero_batch_window_is_not() -> None:
    """A zero cooldown disables it; a zero debounce window is meaningless and refused."""
    assert TriggerPolicy.model_validate({"cooldown": "0s"}).cooldown == timedelta(0)
    assert "batch_window must be positive" in policy_error(batch_window="0s", max_wait="1h")


def test_max_wait_shorter_than_batch_window_is_refused() -> None:
    """max_wait caps the debounce window, so it cannot be shorter than it."""
    assert "max_wait must be at least batch_window" in policy_error(
        batch_window="30m", max_wait="29m"
    )
    policy = TriggerPolicy.model_validate({"batch_window": "30m", "max_wait": "30m"})
    assert policy.max_wait == policy.batch_window


@pytest.mark.parametrize(
    "cuts", [(0.3, 0.3, 0.5), (0.5, 0.3, 0.1), (0.1, 0.5, 0.5), (-0.1, 0.3, 0.5)]
)
def test_non_increasing_severity_cut_points_are_refused(cuts: tuple[float, float, float]) -> None:
    """Cut points must satisfy 0 <= medium < high < critical."""
    assert "severity_cut_points must be increasing" in policy_error(severity_cut_points=cuts)


def test_nan_cut_point_is_refused() -> None:
    """NaN cut points are refused like every other NaN."""
    assert "severity_cut_points" in policy_error(severity_cut_points=(0.1, math.nan, 0.5))


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe/Pariss", "../etc/passwd"])
def test_unknown_time_zone_is_refused_with_a_clear_message(zone: str) -> None:
    """An unknown zone is refused, quoting it and pointing at IANA names."""
    message = policy_error(timezone=zone)
    assert f"unknown time zone {zone!r}" in message
    assert "IANA" in message


def test_unknown_policy_field_is_refused() -> None:
    """Policies refuse unknown fields like every message."""
    assert "Extra inputs are not permitted" in policy_error(cooldwn="1h")


def test_policy_round_trips_through_json() -> None:
    """A policy dumped to JSON (ISO durations) validates back to the same policy."""
    policy = TriggerPolicy.model_validate(
        {"cooldown": "1h30m", "batch_window": "90s", "max_wait": "2d", "timezone": "Asia/Tokyo"}
    )
    assert TriggerPolicy.model_validate(policy.model_dump(mode="json")) == policy
    assert TriggerPolicy.model_validate_json(policy.model_dump_json()) == policy


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=6), "6h"),
        (timedelta(days=2, hours=1, minutes=30), "2d1h30m"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    """format_duration writes the shorthand that parse_duration reads back."""
    assert format_duration(value) == text
    assert parse_duration(text) == value


def test_cost_model_estimate_arithmetic() -> None:
    """estimate = fixed + rate x instances x (base_hours + hours_per_million_rows x rows/1e6)."""
    cost = CostModel(
        fixed_cost=5.0,
        hourly_rate=2.0,
        instance_count=3,
        base_hours=1.0,
        hours_per_million_rows=0.5,
    )
    assert cost.estimate(0) == 11.0  # 5 + 2*3*1
    assert cost.estimate(2_000_000) == 17.0  # 5 + 2*3*(1 + 1)
    assert cost.estimate(333_333) == pytest.approx(5 + 6 * (1 + 0.5 * 0.333333))


def test_default_cost_model_is_one_hour_at_one_unit() -> None:
    """The default estimate is 1.0 whatever the rows."""
    assert CostModel().estimate(0) == 1.0
    assert CostModel().estimate(10_000_000) == 1.0


def test_cost_model_refuses_negative_and_bad_currency() -> None:
    """Cost parameters are non-negative; currency is a 3-letter code."""
    with pytest.raises(ValidationError, match="hourly_rate"):
        CostModel(hourly_rate=-1)
    with pytest.raises(ValidationError, match="currency"):
        CostModel(currency="EURO")


def test_local_day_in_a_non_utc_zone() -> None:
    """23:30 UTC is already the next day in Europe/Paris (UTC+2 in June), not in UTC."""
    moment = datetime(2024, 6, 3, 23, 30, tzinfo=UTC)
    assert TriggerPolicy(timezone="Europe/Paris").local_day(moment) == date(2024, 6, 4)
    assert TriggerPolicy().local_day(moment) == date(2024, 6, 3)
    assert TriggerPolicy(timezone="America/New_York").local_day(moment) == date(2024, 6, 3)


def test_next_day_start_in_a_non_utc_zone() -> None:
    """Paris's next midnight after 2024-06-03 12:00 UTC is 22:00 UTC the same date."""
    policy = TriggerPolicy(timezone="Europe/Paris")
    start = policy.next_day_start(datetime(2024, 6, 3, 12, 0, tzinfo=UTC))
    assert start.astimezone(UTC) == datetime(2024, 6, 3, 22, 0, tzinfo=UTC)
    assert policy.local_day(start) == date(2024, 6, 4)
