"""The `check_performance` activity and the monitor's pure judgement of it, on captured traffic
written exactly as the local endpoint writes it: a real champion (scikit-learn, MLflow) answering
river's Agrawal stream whose concept changes (abruptly, gradually) or does not.

What is checked: the change is found within a bounded delay and goes into the trigger (its
dedup id on the change point, so an overlapping check sends the same id); a stationary stream is
judged ok; low volume waits, then is checked with what it has; bad feedback (labels for unknown
request ids, labels of the wrong type) is a data-quality verdict and never a trigger; a metric
the captured answers cannot produce is a clear, non-retryable error.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from activities.drift.performance_check import bootstrap_samples, check_performance
from activities.local.capture import FEEDBACK, capture_dir, partition
from activities.local.registry import MlflowRegistry
from activities.loop.data_window import write_parquet_atomic
from activities.specs import SpecStore
from tests.support.drift_harness import write_capture, write_feedback
from tests.support.loop_harness import with_changes
from tests.support.performance_capture import capture_stream, champion_home, stream_rows
from workflows.coordinator.triggers import Severity, TriggerKind
from workflows.drift.models import PerformanceCheckInput
from workflows.drift.performance_models import (
    PerformancePolicy,
    PerformanceReport,
    PerformanceStatus,
    VolumeDecision,
)
from workflows.drift.performance_rules import judge_check, performance_trigger
from workflows.spec.models import Metric, ModelSpec

NOW = datetime.now(UTC).replace(microsecond=0)
# Requests one a second: the stream's rows are `ROWS` seconds of traffic before NOW.
ROWS = 1600
CHANGE = 800


def capture_without_scores(home: Path, spec: ModelSpec, rows: pa.Table) -> list[str]:
    registry = MlflowRegistry(home)
    champion = registry.champion(spec.name)
    assert champion is not None
    at = NOW - timedelta(seconds=30)
    return write_capture(
        home,
        spec,
        rows,
        at=at,
        estimator=registry.load(champion),
        version=champion.version,
        scores=False,
    )


def check(
    home: Path, spec: ModelSpec, window_start: datetime, end: datetime = NOW
) -> PerformanceReport:
    return check_performance(
        home,
        SpecStore(home).get(spec.name) or spec,
        MlflowRegistry(home),
        PerformanceCheckInput(
            model=spec.name,
            check_id=f"perf-{spec.name}-{uuid.uuid4().hex[:6]}",
            window_start=window_start,
            window_end=end,
        ),
    )


def test_an_abrupt_change_is_found_and_becomes_a_performance_trigger(
    home: Path, model: str
) -> None:
    spec = champion_home(home, model, metrics=["accuracy"])
    start = NOW - timedelta(seconds=ROWS + 5)
    rows = stream_rows([0] * CHANGE + [2] * (ROWS - CHANGE), seed=1)
    capture_stream(home, spec, rows, start=start)

    report = check(home, spec, window_start=NOW - timedelta(hours=1))
    assert report.version == "2" and report.rows.labelled == ROWS
    assert report.reference_source == f"retrain-{model}-2 evaluation (holdout)"
    assert report.detector is not None and report.detector.degraded
    change = report.detector.last_change
    assert change is not None
    # Found within a bounded delay of the true change, placed close to it.
    assert 0 <= change.detected_index - CHANGE <= 150
    assert abs(change.index - CHANGE) <= 40
    since = {q.metric: q for q in report.since_change}
    assert since[Metric.ACCURACY].value < 0.7 < 0.9 < report.before_change[0].value

    volume, verdict = judge_check(report, spec.performance, NOW - timedelta(hours=1), NOW)
    assert volume is VolumeDecision.CHECK
    assert verdict.status is PerformanceStatus.DEGRADED
    assert verdict.severity in (Severity.HIGH, Severity.CRITICAL)
    event = performance_trigger(report, verdict, "http://endpoint")
    assert event is not None and event.kind is TriggerKind.PERFORMANCE
    signal = event.performance
    assert signal is not None and signal.metric == "accuracy" and signal.reference == 0.95
    assert signal.change_at == change.at and signal.version == "2"
    assert signal.ci_low is not None and signal.ci_high is not None
    assert signal.ci_low <= signal.current <= signal.ci_high < signal.reference

    # A later, overlapping check finds the same change: the same dedup id.
    again = check(
        home, spec, window_start=NOW - timedelta(minutes=10), end=NOW + timedelta(minutes=1)
    )
    _, verdict_again = judge_check(again, spec.performance, NOW - timedelta(minutes=10), NOW)
    repeated = performance_trigger(again, verdict_again)
    assert repeated is not None and repeated.event_id == event.event_id


def test_a_gradual_change_is_found_and_a_stationary_stream_is_ok(home: Path, model: str) -> None:
    spec = champion_home(home, model, metrics=["accuracy"])
    rng = np.random.default_rng(3)
    # Over 400 rows the new concept takes over, linearly.
    share = np.clip((np.arange(ROWS) - 600) / 400, 0, 1)
    functions = [2 if draw < p else 0 for draw, p in zip(rng.random(ROWS), share, strict=True)]
    capture_stream(
        home, spec, stream_rows(functions, seed=2), start=NOW - timedelta(seconds=ROWS + 5)
    )
    report = check(home, spec, window_start=NOW - timedelta(hours=1))
    assert report.detector is not None and report.detector.degraded
    change = report.detector.last_change
    assert change is not None and 600 <= change.detected_index <= 1100
    _, verdict = judge_check(report, spec.performance, NOW - timedelta(hours=1), NOW)
    assert verdict.status is PerformanceStatus.DEGRADED


def test_a_stationary_stream_is_ok_with_no_change(home: Path, model: str) -> None:
    spec = champion_home(home, model, metrics=["accuracy"])
    capture_stream(
        home, spec, stream_rows([0] * ROWS, seed=4), start=NOW - timedelta(seconds=ROWS + 5)
    )
    report = check(home, spec, window_start=NOW - timedelta(hours=1))
    assert report.detector is not None and not report.detector.detected
    _, verdict = judge_check(report, spec.performance, NOW - timedelta(hours=1), NOW)
    assert verdict.status is PerformanceStatus.OK
    assert performance_trigger(report, verdict) is None


def test_a_low_volume_window_waits_then_is_checked_with_what_it_has(home: Path, model: str) -> None:
    spec = champion_home(home, model, metrics=["accuracy"], min_rows=500, min_rows_at_max_age=100)
    capture_stream(home, spec, stream_rows([2] * 180, seed=5), start=NOW - timedelta(seconds=200))
    young = NOW - timedelta(hours=2)
    report = check(home, spec, window_start=young)
    volume, verdict = judge_check(report, spec.performance, young, NOW)
    assert volume is VolumeDecision.WAIT and verdict.status is PerformanceStatus.INSUFFICIENT_DATA
    assert "waiting for labels: 180 of 500" in verdict.summary
    assert performance_trigger(report, verdict) is None
    # A week later the same window is checked with its 180 labels: the collapse shows.
    old = NOW - spec.performance.max_window_age - timedelta(minutes=1)
    report = check(home, spec, window_start=old)
    volume, verdict = judge_check(report, spec.performance, old, NOW)
    assert volume is VolumeDecision.CHECK_AVAILABLE
    assert verdict.status is PerformanceStatus.DEGRADED


def test_bad_feedback_is_data_quality_and_never_a_trigger(home: Path, model: str) -> None:
    spec = champion_home(home, model, metrics=["accuracy"])
    capture_stream(home, spec, stream_rows([2] * 300, seed=6), start=NOW - timedelta(seconds=320))
    # Labels for request ids nobody answered, and a feedback file with text labels.
    write_feedback(
        home, spec, [f"nobody-{i}" for i in range(60)], [1] * 60, at=NOW - timedelta(seconds=5)
    )
    text = pa.table(
        {
            "request_id": [f"text-{i}" for i in range(20)],
            "label": ["yes"] * 20,
            "received_at": [NOW - timedelta(seconds=4)] * 20,
        }
    )
    write_parquet_atomic(
        text, partition(capture_dir(home, spec), FEEDBACK, NOW.date()) / "part-text.parquet"
    )
    report = check(home, spec, window_start=NOW - timedelta(hours=1))
    assert report.rows.unmatched == 60 and report.rows.invalid == 20
    _, verdict = judge_check(report, spec.performance, NOW - timedelta(hours=1), NOW)
    assert verdict.status is PerformanceStatus.DATA_QUALITY
    assert "80 of" in verdict.summary
    assert performance_trigger(report, verdict) is None


def test_a_metric_the_answers_cannot_produce_is_a_clear_error(home: Path, model: str) -> None:
    with pytest.raises(ValidationError, match=r"metrics \['rmse'\] do not apply"):
        with_changes(champion_home(home, model), {"performance": {"metrics": ["rmse"]}})
    spec = champion_home(home, model, metrics=["log_loss"])
    rows = stream_rows([0] * 50, seed=7)
    # Answers captured without scores: log loss cannot be measured.
    ids = capture_without_scores(home, spec, rows)
    write_feedback(home, spec, ids, rows.column("label").to_numpy(), at=NOW - timedelta(seconds=20))
    with pytest.raises(ApplicationError, match=r"performance\.metrics cannot be measured") as error:
        check(home, spec, window_start=NOW - timedelta(hours=1))
    assert error.value.non_retryable


def test_default_metrics_the_answers_cannot_produce_are_left_out_with_a_note(
    home: Path, model: str
) -> None:
    spec = champion_home(home, model)
    rows = stream_rows([0] * 50, seed=8)
    ids = capture_without_scores(home, spec, rows)
    write_feedback(home, spec, ids, rows.column("label").to_numpy(), at=NOW - timedelta(seconds=20))
    report = check(home, spec, window_start=NOW - timedelta(hours=1))
    assert [q.metric for q in report.quality] == [Metric.ACCURACY]
    assert any("not measured: roc_auc, log_loss" in note for note in report.notes)


def test_bootstrap_resamples_shrink_on_large_windows() -> None:
    policy = PerformancePolicy()
    assert bootstrap_samples(1000, policy) == 1000
    assert bootstrap_samples(200_000, policy) == 100
    assert bootstrap_samples(2_000_000, policy) == 100
