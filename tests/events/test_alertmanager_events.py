"""Alertmanager webhook (version 4) payloads mapped to alarm triggers."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from starters.events.alertmanager import alertmanager_alerts, priority_of
from starters.events.mapped import UnknownEventShape
from tests.support.gateway_harness import alertmanager_payload
from workflows.coordinator.triggers import AlarmState, TriggerKind


def test_a_firing_alert_maps_to_an_alarm_with_its_model_and_priority():
    [alert] = alertmanager_alerts(alertmanager_payload("churn"))
    assert alert.model == "churn"
    assert alert.mapped.alarm == "ChurnConversionDrop" and alert.mapped.endpoint is None
    event = alert.mapped.event
    assert event.kind is TriggerKind.ALARM and event.source == "alertmanager"
    assert event.alarm is not None and event.alarm.state is AlarmState.ALARM
    assert event.alarm.reason == "conversion below 10% for 15m"
    assert event.priority == 1  # severity=critical
    assert event.occurred_at == datetime(2026, 11, 12, 10, 0, tzinfo=UTC)
    assert event.metadata["fingerprint"] == "a1b2c3d4e5f60718"
    assert str(event.metadata["generator_url"]).startswith("http://prometheus:9090/")
    labels = event.metadata["labels"]
    assert isinstance(labels, dict) and labels["team"] == "ml"


def test_event_ids_dedupe_repeats_but_not_resolution_or_refiring():
    firing = alertmanager_alerts(alertmanager_payload("churn"))[0].mapped.event
    repeated = alertmanager_alerts(alertmanager_payload("churn"))[0].mapped.event
    assert firing.event_id == repeated.event_id  # repeat_interval re-sends the same alert
    resolved = alertmanager_alerts(alertmanager_payload("churn", status="resolved"))[0]
    assert resolved.mapped.event.alarm is not None
    assert resolved.mapped.event.alarm.state is AlarmState.OK
    assert resolved.mapped.event.occurred_at == datetime(2026, 11, 12, 11, 0, tzinfo=UTC)
    assert resolved.mapped.event.event_id != firing.event_id
    refired = alertmanager_payload("churn")
    refired["alerts"][0]["startsAt"] = "2026-11-13T08:00:00Z"
    assert alertmanager_alerts(refired)[0].mapped.event.event_id != firing.event_id
    other = alertmanager_payload("churn", fingerprint="ffff000011112222")
    assert alertmanager_alerts(other)[0].mapped.event.event_id != firing.event_id


def test_every_alert_of_a_group_is_one_event():
    payload = alertmanager_payload(None)
    second = copy.deepcopy(payload["alerts"][0])
    second["labels"] = {"alertname": "LatencyHigh", "endpoint": "churn-prod", "priority": "P2"}
    second["fingerprint"] = "0123456789abcdef"
    second["status"] = "resolved"
    payload["alerts"].append(second)
    first, other = alertmanager_alerts(payload)
    assert first.model is None and other.model is None
    assert other.mapped.endpoint == "churn-prod" and other.mapped.event.priority == 2
    assert other.mapped.event.alarm is not None
    assert other.mapped.event.alarm.state is AlarmState.OK
    # Resolved without an end time (Alertmanager's zero time): it happened when it started.
    assert other.mapped.event.occurred_at == first.mapped.event.occurred_at
    assert alertmanager_alerts({**payload, "alerts": []}) == []


def test_priority_from_labels():
    assert priority_of({"priority": "P1", "severity": "info"}) == 1
    assert priority_of({"priority": "4"}) == 4
    assert priority_of({"severity": "warning"}) == 3
    assert priority_of({"severity": "Info"}) == 5
    assert priority_of({"severity": "something-else"}) == 3
    assert priority_of({}) == 3
    with pytest.raises(ValueError, match="priority: expected 1-5 or P1-P5"):
        priority_of({"priority": "urgent"})


BAD: list[tuple[Any, str]] = [
    ([], "expected a JSON object"),
    ({"alerts": []}, "not an Alertmanager webhook"),
    ({"version": "2", "alerts": []}, "version '2' is not supported"),
    ({"version": "4", "alerts": {}}, "alerts: expected a list"),
    ({"version": "4", "alerts": ["x"]}, r"alerts\[0\]: expected a JSON object"),
    ({"version": "4", "alerts": [{"status": "pending"}]}, "expected firing or resolved"),
    ({"version": "4", "alerts": [{"labels": {}}]}, "alertname: missing"),
    ({"version": "4", "alerts": [{"labels": {"alertname": 3}}]}, "expected a string"),
    (
        {"version": "4", "alerts": [{"labels": {"alertname": "a"}, "startsAt": "yesterday"}]},
        "not an RFC 3339 time",
    ),
    ({"version": "4", "alerts": [{"labels": {"alertname": "a"}}]}, "startsAt: expected"),
]


def test_malformed_payloads_are_value_errors_naming_the_problem():
    for payload, message in BAD:
        with pytest.raises(ValueError, match=message):
            alertmanager_alerts(payload)
    with pytest.raises(UnknownEventShape):
        alertmanager_alerts({"receiver": "x"})
