"""The join of captured answers with their feedback labels (activities/drift/performance_window.py).

Capture files are written in the layout the endpoint writes (activities/local/capture.py); one
test runs the real endpoint (requests, feedback, flush) and reads its capture back. Bad captured
data (labels of the wrong type, feedback for unknown request ids, files out of the layout) is
counted and described, never raised.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pytest

from activities.drift.performance_metrics import realized_quality, window_outcome
from activities.drift.performance_window import read_labelled_window
from activities.local import capture as layout
from activities.local.registry import MlflowRegistry
from activities.loop.data_window import write_parquet_atomic
from serving.config import EndpointConfig
from starters.demo.synthetic import FEATURES, generate_rows
from tests.support.endpoint_harness import ADMIN_HEADERS, running_endpoint, train_versions
from workflows.spec.models import Metric, Task

DAY = date(2026, 3, 10)
START = datetime(2026, 3, 10, tzinfo=UTC)
END = START + timedelta(days=1)
REQUEST_SCHEMA = pa.schema([*layout.META_FIELDS, pa.field("salary", pa.float64())])


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def answer(request_id: str, captured: datetime, **fields: Any) -> dict[str, Any]:
    row = {
        layout.REQUEST_ID: request_id,
        layout.VARIANT: "v2",
        layout.VERSION: "2",
        layout.SHADOW: False,
        layout.GENERATION: 1,
        layout.CAPTURED_AT: captured,
        layout.LATENCY_MS: 3.0,
        layout.STATUS_CODE: 200,
        layout.ERROR: None,
        layout.PREDICTION: 1.0,
        layout.SCORE: 0.8,
        "salary": 50_000.0,
    }
    return row | fields


def label(request_id: str, value: float, received: datetime) -> dict[str, Any]:
    return {layout.REQUEST_ID: request_id, layout.LABEL: value, layout.RECEIVED_AT: received}


def write(
    root: Path,
    kind: str,
    day: date,
    name: str,
    rows: list[dict[str, Any]],
    schema: pa.Schema | None = None,
) -> None:
    if schema is None:
        schema = REQUEST_SCHEMA if kind == layout.REQUESTS else layout.FEEDBACK_SCHEMA
    write_parquet_atomic(
        pa.Table.from_pylist(rows, schema=schema), layout.partition(root, kind, day) / name
    )


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    """Answers over three days and their labels; the window is DAY (labels received in it)."""
    before = DAY - timedelta(days=1)
    write(
        tmp_path,
        layout.REQUESTS,
        before,
        "part-1-0.parquet",
        [
            # Answered the day before, labelled in the window: in it.
            answer("early", at(before, 23), **{layout.PREDICTION: 0.0, layout.SCORE: 0.3}),
            # Labelled before the window starts: not in it.
            answer("labelled-before", at(before, 8)),
        ],
    )
    write(
        tmp_path,
        layout.REQUESTS,
        DAY,
        "part-2-0.parquet",
        [
            answer("r3", at(DAY, 12), **{layout.PREDICTION: 0.0, layout.SCORE: 0.1}),
            answer("r1", at(DAY, 10)),
            answer("r2", at(DAY, 11)),
            # The mirrored answer to r1 (shadow): not the live one.
            answer("r1", at(DAY, 10), **{layout.SHADOW: True, layout.VARIANT: "v3"}),
            answer(
                "failed",
                at(DAY, 13),
                **{
                    layout.STATUS_CODE: 500,
                    layout.PREDICTION: None,
                    layout.SCORE: None,
                    layout.ERROR: "boom",
                },
            ),
            answer("other", at(DAY, 14), **{layout.VARIANT: "v1", layout.VERSION: "1"}),
        ],
    )
    write(
        tmp_path,
        layout.FEEDBACK,
        before,
        "part-1-0.parquet",
        [label("labelled-before", 1.0, at(before, 9))],
    )
    write(
        tmp_path,
        layout.FEEDBACK,
        DAY,
        "part-3-0.parquet",
        [
            label("r1", 0.0, at(DAY, 15)),
            label("r2", 1.0, at(DAY, 15)),
            label("early", 0.0, at(DAY, 1)),
            label("failed", 1.0, at(DAY, 15)),
            label("other", 1.0, at(DAY, 15)),
        ],
    )
    # r1 relabelled later (the latest label wins); r3 labelled after the window ends.
    write(tmp_path, layout.FEEDBACK, DAY, "part-4-0.parquet", [label("r1", 1.0, at(DAY, 20))])
    after = DAY + timedelta(days=1)
    write(tmp_path, layout.FEEDBACK, after, "part-5-0.parquet", [label("r3", 0.0, at(after, 1))])
    return tmp_path


def test_labels_of_the_window_join_their_live_answers_in_request_order(capture: Path) -> None:
    window = read_labelled_window(capture, Task.CLASSIFICATION, START, END, versions=["2"])
    assert window.request_id.tolist() == ["early", "r1", "r2"]
    assert window.label.tolist() == [0.0, 1.0, 1.0]  # r1's latest label
    assert window.prediction.tolist() == [0.0, 1.0, 1.0]
    assert window.score.tolist() == [0.3, 0.8, 0.8]
    assert window.variant.tolist() == ["v2"] * 3 and window.version.tolist() == ["2"] * 3
    assert window.times() == [at(DAY - timedelta(days=1), 23), at(DAY, 10), at(DAY, 11)]
    rows = window.rows
    assert (rows.labels, rows.labelled, rows.failed, rows.other_variants) == (5, 3, 1, 1)
    assert (rows.unmatched, rows.invalid, rows.dropped, rows.skipped_files) == (0, 0, 0, 0)
    assert rows.problems == []


def test_every_version_by_default_and_the_shadow_answers_on_request(capture: Path) -> None:
    every = read_labelled_window(capture, Task.CLASSIFICATION, START, END)
    assert every.request_id.tolist() == ["early", "r1", "r2", "other"]
    shadow = read_labelled_window(capture, Task.CLASSIFICATION, START, END, shadow=True)
    assert shadow.request_id.tolist() == ["r1"] and shadow.variant.tolist() == ["v3"]
    # Requests without a shadow answer are someone else's in the shadow's view, not unknown.
    assert (shadow.rows.unmatched, shadow.rows.other_variants) == (0, 4)


def test_a_later_window_holds_the_late_label_and_nothing_twice(capture: Path) -> None:
    later = read_labelled_window(capture, Task.CLASSIFICATION, END, END + timedelta(days=1))
    assert later.request_id.tolist() == ["r3"] and later.label.tolist() == [0.0]


def test_feedback_for_unknown_request_ids_is_counted_and_named(capture: Path) -> None:
    write(
        capture,
        layout.FEEDBACK,
        DAY,
        "part-6-0.parquet",
        [label(f"ghost-{i}", 1.0, at(DAY, 16)) for i in range(7)],
    )
    window = read_labelled_window(capture, Task.CLASSIFICATION, START, END, versions=["2"])
    assert window.size == 3
    assert window.rows.unmatched == 7 and window.rows.labels == 12
    (problem,) = window.rows.problems
    assert problem.startswith("7 label(s) for request ids no capture file answered")
    assert "ghost-0" in problem and "and 2 more" in problem
    # A request answered before the lookback is unknown too.
    short = read_labelled_window(capture, Task.CLASSIFICATION, START, END, lookback=timedelta(0))
    assert "early" not in short.request_id.tolist() and short.rows.unmatched == 8


def test_labels_stored_as_text_are_reported_and_the_rest_is_read(capture: Path) -> None:
    text_schema = pa.schema(
        [
            pa.field(layout.REQUEST_ID, pa.string()),
            pa.field(layout.LABEL, pa.string()),
            pa.field(layout.RECEIVED_AT, pa.timestamp("us", tz="UTC")),
        ]
    )
    write(
        capture,
        layout.FEEDBACK,
        DAY,
        "part-7-0.parquet",
        [{**label("r2", 0.0, at(DAY, 17)), layout.LABEL: "yes"} for _ in range(3)],
        schema=text_schema,
    )
    window = read_labelled_window(capture, Task.CLASSIFICATION, START, END, versions=["2"])
    assert window.size == 3 and window.label.tolist() == [0.0, 1.0, 1.0]
    assert (window.rows.invalid, window.rows.skipped_files) == (3, 1)
    assert "part-7-0.parquet stores labels as string, not numbers" in window.rows.problems[0]


@pytest.mark.parametrize(
    ("task", "value", "classes", "reason"),
    [
        (Task.CLASSIFICATION, 0.5, None, "not a whole number"),
        (Task.CLASSIFICATION, 7.0, [0, 1], "not one of the model's classes [0.0, 1.0]"),
        (Task.REGRESSION, float("nan"), None, "not finite"),
        (Task.REGRESSION, float("inf"), None, "not finite"),
    ],
)
def test_labels_that_cannot_meet_a_prediction_are_invalid(
    capture: Path, task: Task, value: float, classes: list[int] | None, reason: str
) -> None:
    write(capture, layout.FEEDBACK, DAY, "part-8-0.parquet", [label("r2", value, at(DAY, 18))])
    window = read_labelled_window(capture, task, START, END, versions=["2"], classes=classes)
    assert "r2" not in window.request_id.tolist()
    assert window.rows.invalid == 1
    assert reason in window.rows.problems[0]


def test_request_files_outside_the_layout_are_skipped(capture: Path) -> None:
    broken = pa.schema([pa.field(layout.REQUEST_ID, pa.string()), pa.field("x", pa.int64())])
    write(capture, layout.REQUESTS, DAY, "part-9-0.parquet", [{"request_id": "r9", "x": 1}], broken)
    (capture / layout.REQUESTS / f"date={DAY}" / "part-9-1.parquet").write_bytes(b"not parquet")
    write(capture, layout.FEEDBACK, DAY, "part-9-0.parquet", [label("r9", 1.0, at(DAY, 18))])
    window = read_labelled_window(capture, Task.CLASSIFICATION, START, END, versions=["2"])
    assert window.size == 3 and window.rows.unmatched == 1
    assert window.rows.skipped_files == 2
    assert any(
        "not in the capture layout" in p and "variant (missing)" in p for p in window.rows.problems
    )


def test_the_window_keeps_the_newest_labels_up_to_its_bound(tmp_path: Path) -> None:
    answers = [answer(f"q{i}", at(DAY, 0, i)) for i in range(50)]
    write(tmp_path, layout.REQUESTS, DAY, "part-1-0.parquet", answers)
    for part in range(5):
        labels = [label(f"q{i}", 1.0, at(DAY, 1, i)) for i in range(part * 10, part * 10 + 10)]
        write(tmp_path, layout.FEEDBACK, DAY, f"part-{part}-0.parquet", labels)
    window = read_labelled_window(tmp_path, Task.CLASSIFICATION, START, END, max_rows=15)
    assert window.request_id.tolist() == [f"q{i}" for i in range(35, 50)]
    assert window.rows.dropped == 35 and window.rows.labelled == 15
    assert window.rows.labels == 50


def test_an_empty_capture_is_an_empty_window(tmp_path: Path) -> None:
    window = read_labelled_window(tmp_path, Task.REGRESSION, START, END)
    assert window.size == 0 and window.rows.labels == 0


def test_the_window_needs_aware_ordered_bounds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        read_labelled_window(tmp_path, Task.REGRESSION, START.replace(tzinfo=None), END)
    with pytest.raises(ValueError, match="starts"):
        read_labelled_window(tmp_path, Task.REGRESSION, END, START)


def test_the_real_endpoints_capture_reads_back(tmp_path: Path) -> None:
    """Requests and feedback through the endpoint's HTTP API; the window matches the model."""
    model = "perf-window"
    spec, (version,) = train_versions(tmp_path, model, count=1)
    estimator = MlflowRegistry(tmp_path).load(version)
    table = generate_rows(date(2026, 1, 1), 120, function=0, seed=4, stream=7)
    rows = table.select(list(FEATURES)).to_pylist()
    truth = table.column("label").to_pylist()
    ids = [f"ep-{i}" for i in range(len(rows))]
    config = EndpointConfig(home=tmp_path, model=model, seed=1, capture_flush_seconds=600)
    started = datetime.now(UTC)
    with running_endpoint(config) as url, httpx.Client(timeout=30) as http:
        for request_id, features in zip(ids, rows, strict=True):
            response = http.post(
                f"{url}/invocations", json={"features": features, "request_id": request_id}
            )
            assert response.status_code == 200, response.text
        labels = [{"request_id": i, "label": y} for i, y in zip(ids, truth, strict=True)]
        assert http.post(f"{url}/feedback", json={"labels": labels}).status_code == 200
        assert http.post(f"{url}/admin/flush", headers=ADMIN_HEADERS).status_code == 200
    window = read_labelled_window(
        layout.capture_dir(tmp_path, spec),
        spec.task,
        started - timedelta(minutes=1),
        datetime.now(UTC) + timedelta(minutes=1),
        versions=[version.version],
    )
    assert sorted(window.request_id.tolist()) == sorted(ids)
    frame = table.select(list(FEATURES)).to_pandas()
    order = np.argsort([int(i.removeprefix("ep-")) for i in window.request_id])
    np.testing.assert_array_equal(window.prediction[order], estimator.predict(frame))
    np.testing.assert_allclose(window.score[order], estimator.predict_proba(frame)[:, 1])
    quality = realized_quality(window_outcome(window, spec.task), [Metric.ACCURACY, Metric.ROC_AUC])
    expected = float((estimator.predict(frame) == np.asarray(truth)).mean())
    assert quality[0].value == pytest.approx(expected)


def test_a_shadow_answer_in_an_older_file_is_still_found(tmp_path: Path) -> None:
    """The scan stops when every label has an answer of the wanted kind, not any answer."""
    write(
        tmp_path,
        layout.REQUESTS,
        DAY,
        "part-1-0.parquet",
        [answer("m", at(DAY, 9), **{layout.SHADOW: True, layout.VARIANT: "v3"})],
    )
    write(tmp_path, layout.REQUESTS, DAY, "part-2-0.parquet", [answer("m", at(DAY, 9))])
    write(tmp_path, layout.FEEDBACK, DAY, "part-1-0.parquet", [label("m", 1.0, at(DAY, 10))])
    shadow = read_labelled_window(tmp_path, Task.CLASSIFICATION, START, END, shadow=True)
    live = read_labelled_window(tmp_path, Task.CLASSIFICATION, START, END)
    assert shadow.variant.tolist() == ["v3"] and live.variant.tolist() == ["v2"]
