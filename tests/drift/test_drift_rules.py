"""The pure drift decisions: statuses, significance, the overall score, what the coordinator
hears."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workflows.coordinator.models import Action, Reason
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.rules import CoordinatorRules, new_state
from workflows.coordinator.triggers import AlarmCategory, Severity, TriggerKind
from workflows.drift.models import (
    ColumnDrift,
    ColumnKind,
    ColumnRole,
    ColumnRule,
    ColumnStatus,
    DriftPolicy,
    DriftReport,
    DriftStatistic,
    ReportStatus,
)
from workflows.drift.rules import assess, monitor_trigger

CUTS = (0.1, 0.3, 0.5)
NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


def column(name: str, psi: float | None, pvalue: float | None, **changes: Any) -> ColumnDrift:
    values: dict[str, Any] = {
        "name": name,
        "role": ColumnRole.FEATURE,
        "kind": ColumnKind.NUMERIC,
        "status": ColumnStatus.OK,
        "n_reference": 10_000,
        "n_current": 5_000,
        "missing_reference": 0.0,
        "missing_current": 0.0,
        "missing_pvalue": 1.0,
        "psi": psi,
        "js": None if psi is None else psi / 3,
        "ks_statistic": 0.1,
        "ks_pvalue": pvalue,
        "threshold": 1.0,
        "weight": 1.0,
    }
    values.update(changes)
    return ColumnDrift(**values)


def report_from(columns: list[ColumnDrift], policy: DriftPolicy, rows: int = 5_000) -> DriftReport:
    verdict = assess(columns, policy, CUTS, rows)
    return DriftReport(
        model="m",
        check_id="drift-m-1",
        checked_at=NOW,
        window_start=NOW - timedelta(days=1),
        window_end=NOW,
        rows=rows,
        score=verdict.score,
        severity=verdict.severity,
        status=verdict.status,
        drifted=verdict.drifted,
        data_quality=verdict.data_quality,
        columns=verdict.columns,
        summary=verdict.summary,
        endpoint="http://127.0.0.1:8080",
        report_uri="drift/m/reports/drift-m-1.json",
    )


def test_a_column_drifts_only_when_large_and_significant() -> None:
    policy = DriftPolicy()
    verdict = assess(
        [
            column("big_and_significant", 0.4, 1e-12),
            column("big_but_noise", 0.4, 0.2),
            column("significant_but_small", 0.05, 1e-12),
            column("quiet", 0.001, 0.9),
        ],
        policy,
        CUTS,
        5_000,
    )
    statuses = {c.name: c.status for c in verdict.columns}
    assert statuses == {
        "big_and_significant": ColumnStatus.DRIFTED,
        "big_but_noise": ColumnStatus.OK,
        "significant_but_small": ColumnStatus.OK,
        "quiet": ColumnStatus.OK,
    }
    assert verdict.drifted == ["big_and_significant"]
    assert verdict.score == pytest.approx(0.4)
    assert verdict.severity is Severity.HIGH
    assert verdict.status is ReportStatus.DRIFT


def test_bonferroni_splits_alpha_over_the_columns_tested() -> None:
    # 0.004 < 0.01 alone, but not below 0.01 / 4.
    alone = assess([column("x", 0.2, 0.004)], DriftPolicy(), CUTS, 5_000)
    among_four = assess(
        [column("x", 0.2, 0.004), *(column(f"q{i}", 0.0, 0.9) for i in range(3))],
        DriftPolicy(),
        CUTS,
        5_000,
    )
    assert alone.drifted == ["x"]
    assert among_four.drifted == []


def test_thresholds_and_weights_per_column_and_the_configured_statistic() -> None:
    policy = DriftPolicy(
        features={"loud": ColumnRule(threshold=0.5), "important": ColumnRule(weight=2.0)}
    )
    verdict = assess(
        [column("loud", 0.4, 1e-9), column("important", 0.2, 1e-9)], policy, CUTS, 5_000
    )
    assert verdict.drifted == ["important"]
    assert verdict.score == pytest.approx(0.4)  # weight 2 x 0.2
    js_policy = DriftPolicy(statistic=DriftStatistic.JS)
    js_verdict = assess([column("x", 0.6, 1e-9)], js_policy, CUTS, 5_000)
    assert js_verdict.columns[0].score == pytest.approx(0.2)
    assert js_verdict.severity is Severity.MEDIUM


def test_too_few_rows_is_insufficient_data_and_sends_nothing() -> None:
    report = report_from([column("x", 2.0, 1e-30)], DriftPolicy(min_rows=500), rows=120)
    assert report.status is ReportStatus.INSUFFICIENT_DATA
    assert report.score == 0 and report.drifted == []
    assert all(c.status is ColumnStatus.INSUFFICIENT_DATA for c in report.columns)
    assert monitor_trigger(report) is None


def test_broken_data_raises_a_data_quality_alarm_instead_of_a_drift_trigger() -> None:
    columns = [
        column("drifting", 0.8, 1e-20),
        column("emptied", None, None, n_current=0, missing_current=1.0),
        column(
            "holes", 0.01, 0.5, missing_reference=0.01, missing_current=0.3, missing_pvalue=1e-9
        ),
        column("retyped", 0.0, 1.0, issues=["type changed: reference double, captured string"]),
    ]
    report = report_from(columns, DriftPolicy())
    statuses = {c.name: c.status for c in report.columns}
    assert statuses["drifting"] is ColumnStatus.DRIFTED
    assert {name for name, s in statuses.items() if s is ColumnStatus.DATA_QUALITY} == {
        "emptied",
        "holes",
        "retyped",
    }
    assert report.status is ReportStatus.DATA_QUALITY
    event = monitor_trigger(report)
    assert event is not None and event.kind is TriggerKind.ALARM
    assert event.alarm is not None and event.alarm.category is AlarmCategory.DATA_QUALITY
    assert "retyped: type changed" in (event.alarm.reason or "")
    assert "emptied: all values missing" in (event.alarm.reason or "")


def test_a_data_quality_alarm_is_sent_once_while_the_problems_persist() -> None:
    broken = column("x", 0.0, 1.0, issues=["type changed: reference double, captured string"])
    first = report_from([broken], DriftPolicy())
    again = first.model_copy(update={"check_id": "drift-m-2"})
    assert monitor_trigger(first, None) is not None
    assert monitor_trigger(again, first) is None
    worse = report_from(
        [broken, column("y", None, None, n_current=0, missing_current=1.0)], DriftPolicy()
    )
    assert monitor_trigger(worse, first) is not None  # a new problem is news
    healed = report_from([column("x", 0.0, 0.9)], DriftPolicy())
    assert monitor_trigger(first, healed) is not None  # back after a clean check


def test_a_missing_rate_rise_needs_size_and_significance() -> None:
    small_rise = column("x", 0.0, 1.0, missing_current=0.05, missing_pvalue=1e-9)
    noisy_rise = column("y", 0.0, 1.0, missing_current=0.5, missing_pvalue=0.3)
    verdict = assess([small_rise, noisy_rise], DriftPolicy(), CUTS, 5_000)
    assert all(c.status is not ColumnStatus.DATA_QUALITY for c in verdict.columns)


def test_labels_and_predictions_arriving_late_are_not_data_quality() -> None:
    late_labels = column("label", 0.0, 1.0, role=ColumnRole.LABEL, n_current=20)
    verdict = assess([column("x", 0.0, 0.9), late_labels], DriftPolicy(), CUTS, 5_000)
    statuses = {c.name: c.status for c in verdict.columns}
    assert statuses == {"x": ColumnStatus.OK, "label": ColumnStatus.INSUFFICIENT_DATA}
    assert verdict.status is ReportStatus.OK


def test_drift_trigger_carries_the_context_and_routes_by_severity() -> None:
    report = report_from([column("age", 0.6, 1e-12), column("income", 0.2, 1e-12)], DriftPolicy())
    event = monitor_trigger(report)
    assert event is not None and event.drift is not None
    assert event.kind is TriggerKind.DRIFT and event.event_id == "drift-m-1"
    assert event.priority == 1  # critical
    assert event.drift.severity is Severity.CRITICAL and event.drift.score == pytest.approx(0.6)
    assert event.drift.features == ["age", "income"]
    assert event.drift.endpoint == "http://127.0.0.1:8080"
    assert event.drift.window_start == NOW - timedelta(days=1)
    assert event.drift.report_uri == "drift/m/reports/drift-m-1.json"
    clean = report_from([column("age", 0.01, 0.8)], DriftPolicy())
    assert clean.status is ReportStatus.OK and monitor_trigger(clean) is None


@pytest.mark.parametrize(
    ("psi", "action", "reason"),
    [
        (0.15, Action.START, Reason.ELIGIBLE),
        (0.6, Action.ESCALATE, Reason.DRIFT_CRITICAL),
    ],
)
def test_the_coordinator_routes_monitor_triggers(
    psi: float, action: Action, reason: Reason
) -> None:
    rules = CoordinatorRules(new_state("m", TriggerPolicy(auto_retrain=True)))
    event = monitor_trigger(report_from([column("age", psi, 1e-12)], DriftPolicy()))
    assert event is not None
    step = rules.on_trigger(event, NOW)
    assert (step.decision.action, step.decision.reason) == (action, reason)
    if action is Action.START:
        # The loop's trigger context, kept in its audit record, links the report.
        assert step.start is not None
        drift = step.start.trigger.drift
        assert drift is not None and drift.report_uri == "drift/m/reports/drift-m-1.json"


def test_low_drift_is_a_logged_decision() -> None:
    rules = CoordinatorRules(new_state("m", TriggerPolicy()))
    weak = DriftPolicy(features={"age": ColumnRule(weight=0.5)})
    event = monitor_trigger(report_from([column("age", 0.15, 1e-12)], weak))
    assert event is not None and event.drift is not None
    assert event.drift.severity is Severity.LOW
    step = rules.on_trigger(event, NOW)
    assert (step.decision.action, step.decision.reason) == (Action.IGNORE, Reason.DRIFT_LOW)


def test_a_data_quality_alarm_never_starts_a_loop_and_notifies() -> None:
    rules = CoordinatorRules(new_state("m", TriggerPolicy()))
    broken = column("x", 0.0, 1.0, issues=["missing from 3 of the window's capture file(s)"])
    event = monitor_trigger(report_from([broken], DriftPolicy()))
    assert event is not None
    step = rules.on_trigger(event, NOW)
    assert (step.decision.action, step.decision.reason) == (Action.IGNORE, Reason.DATA_QUALITY)
    assert step.start is None
    assert [n.level for n in step.notifications] == ["warning"]
    assert "missing from 3" in step.notifications[0].body


@given(
    psis=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=12),
    pvalues=st.lists(st.floats(0, 1, allow_nan=False), min_size=12, max_size=12),
)
def test_score_is_the_largest_drifted_score_and_order_free(
    psis: list[float], pvalues: list[float]
) -> None:
    columns = [column(f"c{i}", p, pvalues[i]) for i, p in enumerate(psis)]
    forward = assess(columns, DriftPolicy(), CUTS, 5_000)
    backward = assess(list(reversed(columns)), DriftPolicy(), CUTS, 5_000)
    assert forward.score == backward.score
    assert sorted(forward.drifted) == sorted(backward.drifted)
    drifted_scores = [c.score or 0.0 for c in forward.columns if c.status is ColumnStatus.DRIFTED]
    assert forward.score == max(drifted_scores, default=0.0)
    assert (forward.status is ReportStatus.DRIFT) == bool(drifted_scores)
