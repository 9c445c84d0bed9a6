"""A model's labelled predictions in a time window: captured answers joined with their feedback.

The window is defined by **label arrival**: the latest label each request received in
[start, end) (feedback partitions dated on or after `start`, by `received_at`), joined with the
answer the endpoint captured for that request (request partitions from `start - lookback` on,
since a label arrives after its request). Consecutive windows therefore split the labelled
stream without losing a late label or counting one twice. Rows come out in request time order
(`captured_at`), the order of the per-prediction loss stream.

Reading is bounded: feedback is read one file at a time and only the newest `max_rows` labels
are kept (the rest counted as dropped); request files are scanned newest first for the labelled
ids only (the row filter pushed down to the Parquet scan), reading no feature column, and the
scan stops once every label has found its request.

Bad captured data never stops the reader; it is counted in `PerformanceRows` and described in
its `problems`:

- a file that does not follow the capture layout (`activities.local.capture`), e.g. labels
  stored as text, is skipped (its labels counted as invalid);
- a label for a request id no request file of the window or its lookback holds is unmatched;
- a label that cannot be compared with a prediction (not finite; for a classifier, not a whole
  number or not one of the given classes) is invalid;
- labels of failed answers, and of other versions or variants than the monitored ones, are
  counted apart.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.dataset as ds  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from activities.local.capture import (
    CAPTURED_AT,
    FEEDBACK,
    LABEL,
    PREDICTION,
    RECEIVED_AT,
    REQUEST_ID,
    REQUESTS,
    SCORE,
    SHADOW,
    STATUS_CODE,
    VARIANT,
    VERSION,
    partitions_since,
)
from activities.rollout.window import SERVER_ERROR
from workflows.drift.performance_models import MAX_PROBLEMS, PerformanceRows
from workflows.spec.models import Task

FloatArray = npt.NDArray[np.float64]
ObjectArray = npt.NDArray[np.object_]
TimeArray = npt.NDArray[np.datetime64]

DEFAULT_MAX_ROWS = 200_000
DEFAULT_LOOKBACK = timedelta(days=7)
_EXAMPLES = 5
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_REQUEST_COLUMNS = (
    REQUEST_ID,
    VARIANT,
    VERSION,
    SHADOW,
    STATUS_CODE,
    CAPTURED_AT,
    PREDICTION,
    SCORE,
)
_REQUEST_TYPES = pa.schema(
    [
        (REQUEST_ID, pa.string()),
        (VARIANT, pa.string()),
        (VERSION, pa.string()),
        (SHADOW, pa.bool_()),
        (STATUS_CODE, pa.int64()),
        (CAPTURED_AT, _TIMESTAMP),
        (PREDICTION, pa.float64()),
        (SCORE, pa.float64()),
    ]
)
# What each column must be readable as (integer status codes of any width are fine).
_REQUEST_KINDS = {
    REQUEST_ID: pa.types.is_string,
    VARIANT: pa.types.is_string,
    VERSION: pa.types.is_string,
    SHADOW: pa.types.is_boolean,
    STATUS_CODE: pa.types.is_integer,
    CAPTURED_AT: pa.types.is_timestamp,
    PREDICTION: lambda kind: pa.types.is_floating(kind) or pa.types.is_integer(kind),
    SCORE: lambda kind: pa.types.is_floating(kind) or pa.types.is_null(kind),
}


# eq=False: comparing numpy arrays with == gives arrays, not a truth value.
@dataclass(frozen=True, eq=False)
class LabelledWindow:
    """Labelled predictions in request time order (all arrays equally long).

    `prediction`: the predicted class as a number, or the regression output; `score`: the
    positive-class probability of a binary classifier (NaN when not captured); `label`: the
    latest ground truth received in the window.
    """

    request_id: ObjectArray
    captured_at: TimeArray
    received_at: TimeArray
    variant: ObjectArray
    version: ObjectArray
    prediction: FloatArray
    score: FloatArray
    label: FloatArray
    rows: PerformanceRows = field(default_factory=PerformanceRows)

    def __post_init__(self) -> None:
        lengths = {f.name: len(getattr(self, f.name)) for f in fields(self) if f.name != "rows"}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"the window's arrays differ in length: {lengths}")

    @property
    def size(self) -> int:
        return len(self.label)

    def times(self) -> list[datetime]:
        """Each row's request time, as aware UTC datetimes."""
        return [
            moment.replace(tzinfo=UTC)
            for moment in self.captured_at.astype("datetime64[us]").tolist()
        ]


class _Problems:
    """Counters and the first few descriptions of what was wrong with the captured data."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.messages: list[str] = []

    def add(self, kind: str, count: int, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + count
        if len(self.messages) < MAX_PROBLEMS:
            self.messages.append(message)


def _in_window(table: pa.Table, column: str, start: datetime, end: datetime) -> pa.Table:
    times = table.column(column)
    keep = pc.and_(
        pc.greater_equal(times, pa.scalar(start, _TIMESTAMP)),
        pc.less(times, pa.scalar(end, _TIMESTAMP)),
    )
    return table.filter(pc.fill_null(keep, False))


def _read_feedback(
    files: list[Path], start: datetime, end: datetime, max_rows: int, problems: _Problems
) -> tuple[pa.Table, int]:
    """The latest label per request id received in [start, end), at most the newest `max_rows`
    of them, and how many were dropped beyond that bound."""
    latest = pa.table(
        {
            REQUEST_ID: pa.array([], pa.string()),
            LABEL: pa.array([], pa.float64()),
            RECEIVED_AT: pa.array([], _TIMESTAMP),
        }
    )
    dropped = 0
    for file in files:
        try:
            schema = pq.read_schema(file)
            if missing := [n for n in (REQUEST_ID, LABEL, RECEIVED_AT) if n not in schema.names]:
                raise ValueError(f"no column(s) {', '.join(missing)}")
            label_type = schema.field(LABEL).type
            if not (pa.types.is_floating(label_type) or pa.types.is_integer(label_type)):
                rows = pq.ParquetFile(file).metadata.num_rows
                problems.add(
                    "invalid",
                    rows,
                    f"feedback file {file.name} stores labels as {label_type}, not numbers: its "
                    f"{rows} label(s) are ignored",
                )
                problems.add("skipped_files", 1, f"skipped feedback file {file.name}")
                continue
            table = pq.read_table(file, columns=[REQUEST_ID, LABEL, RECEIVED_AT])
            table = table.cast(latest.schema)
        except (OSError, ValueError, pa.ArrowException) as error:
            problems.add("skipped_files", 1, f"unreadable feedback file {file.name}: {error}")
            continue
        table = _in_window(table, RECEIVED_AT, start, end)
        complete = table.drop_null()
        if nulls := table.num_rows - complete.num_rows:
            problems.add(
                "invalid", nulls, f"feedback file {file.name}: {nulls} row(s) without a label or id"
            )
        table = complete
        if table.num_rows == 0:
            continue
        combined = pa.concat_tables([latest, table])
        # Newest first, then the first row per id: each id's latest label.
        combined = combined.take(pc.sort_indices(combined, sort_keys=[(RECEIVED_AT, "descending")]))
        ids = combined.column(REQUEST_ID).to_numpy(zero_copy_only=False)
        _, first = np.unique(ids, return_index=True)
        combined = combined.take(pa.array(np.sort(first)))
        if combined.num_rows > max_rows:
            dropped += combined.num_rows - max_rows
            combined = combined.slice(0, max_rows)
        latest = combined
    return latest, dropped


def _readable_requests(file: Path, problems: _Problems) -> bool:
    try:
        schema = pq.read_schema(file)
    except (OSError, pa.ArrowException) as error:
        problems.add("skipped_files", 1, f"unreadable request file {file.name}: {error}")
        return False
    wrong = [
        f"{name} ({schema.field(name).type if name in schema.names else 'missing'})"
        for name, fits in _REQUEST_KINDS.items()
        if name not in schema.names or not fits(schema.field(name).type)
    ]
    if wrong:
        problems.add(
            "skipped_files",
            1,
            f"request file {file.name} is not in the capture layout: {', '.join(wrong)}",
        )
        return False
    return True


def _read_requests(
    files: list[Path], wanted: pa.Array, shadow: bool, problems: _Problems
) -> tuple[pa.Table, pa.Array]:
    """The answers of the wanted kind (live, or shadow when asked) to the wanted request ids,
    and the ids answered only by the other kind. Newest files first; the scan stops when every
    id has its answer."""
    parts, others = [], []
    remaining = wanted
    for file in reversed(files):
        if len(remaining) == 0:
            break
        if not _readable_requests(file, problems):
            continue
        try:
            table = (
                ds.dataset(str(file), format="parquet")
                .to_table(
                    columns=list(_REQUEST_COLUMNS), filter=ds.field(REQUEST_ID).isin(remaining)
                )
                .select(list(_REQUEST_COLUMNS))
                .cast(_REQUEST_TYPES)
            )
        except (OSError, pa.ArrowException) as error:
            problems.add("skipped_files", 1, f"unreadable request file {file.name}: {error}")
            continue
        of_kind = pc.fill_null(pc.equal(table.column(SHADOW), shadow), False)
        others.append(table.filter(pc.invert(of_kind)).column(REQUEST_ID))
        table = table.filter(of_kind)
        if table.num_rows == 0:
            continue
        # A request answered twice (a retried id) keeps its latest answer: files are read newest
        # first, so the first seen wins.
        ids = table.column(REQUEST_ID).to_numpy(zero_copy_only=False)
        order = np.argsort(-table.column(CAPTURED_AT).to_numpy().astype(np.int64), kind="stable")
        _, first = np.unique(ids[order], return_index=True)
        table = table.take(pa.array(order[first]))
        parts.append(table)
        remaining = pc.filter(
            remaining, pc.invert(pc.is_in(remaining, value_set=table.column(REQUEST_ID)))
        )
    answers = pa.concat_tables(parts) if parts else _REQUEST_TYPES.empty_table()
    if not others:
        return answers, pa.array([], pa.string())
    other_ids = pa.chunked_array(others, pa.string()).combine_chunks()
    only_other = pc.invert(pc.is_in(other_ids, value_set=answers.column(REQUEST_ID)))
    return answers, pc.unique(pc.filter(other_ids, only_other))


def _invalid_labels(labels: FloatArray, task: Task, classes: Any) -> npt.NDArray[np.bool_]:
    invalid = ~np.isfinite(labels)
    if task is Task.CLASSIFICATION:
        finite = np.where(invalid, 0.0, labels)
        invalid |= finite != np.round(finite)
        if classes is not None:
            invalid |= ~np.isin(finite, np.asarray(classes, dtype=np.float64))
    return invalid


def _examples(values: Any) -> str:
    shown = [str(value) for value in values[:_EXAMPLES]]
    more = len(values) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def read_labelled_window(
    capture_dir: Path,
    task: Task,
    start: datetime,
    end: datetime,
    *,
    versions: Collection[str] | None = None,
    variants: Collection[str] | None = None,
    shadow: bool = False,
    classes: npt.ArrayLike | None = None,
    lookback: timedelta = DEFAULT_LOOKBACK,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> LabelledWindow:
    """The labelled predictions whose label arrived in [start, end) (aware datetimes).

    `versions` / `variants`: keep the answers of these only (default: every one); `shadow`:
    the mirrored answers instead of the live ones; `classes`: the model's classes, so labels
    outside them count as invalid; `lookback`: how long before `start` a labelled request may
    have been answered; `max_rows`: the most labels read (the newest).
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("the window's start and end must be timezone-aware")
    if start > end:
        raise ValueError(f"the window starts ({start}) after it ends ({end})")
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    problems = _Problems()
    feedback, dropped = _read_feedback(
        partitions_since(capture_dir, FEEDBACK, start), start, end, max_rows, problems
    )
    request_files = [
        file
        for file in partitions_since(capture_dir, REQUESTS, start - lookback)
        # Partitions dated after the window's end cannot hold a request labelled inside it.
        if file.parent.name.removeprefix("date=") <= end.date().isoformat()
    ]
    requests, other_kind = _read_requests(
        request_files, pc.unique(feedback.column(REQUEST_ID)), shadow, problems
    )

    # The join: each label's answer, by request id.
    positions = pc.index_in(feedback.column(REQUEST_ID), value_set=requests.column(REQUEST_ID))
    matched = pc.is_valid(positions).to_numpy(zero_copy_only=False)
    # Labels of requests answered only by the other kind (live vs shadow) are not unknown.
    elsewhere = pc.is_in(feedback.column(REQUEST_ID), value_set=other_kind).to_numpy(
        zero_copy_only=False
    )
    if unmatched := int((~matched & ~elsewhere).sum()):
        ids = feedback.column(REQUEST_ID).to_numpy(zero_copy_only=False)[~matched & ~elsewhere]
        problems.add(
            "unmatched",
            unmatched,
            f"{unmatched} label(s) for request ids no capture file answered between "
            f"{(start - lookback).isoformat()} and {end.isoformat()}: {_examples(ids)}",
        )
    labels_table = feedback.filter(pa.array(matched))
    answers = requests.take(pc.drop_null(positions))

    label = labels_table.column(LABEL).to_numpy().astype(np.float64)
    status = answers.column(STATUS_CODE).to_numpy()
    prediction = answers.column(PREDICTION).fill_null(np.nan).to_numpy().astype(np.float64)
    failed = (status >= SERVER_ERROR) | ~np.isfinite(prediction)
    variant = answers.column(VARIANT).to_numpy(zero_copy_only=False)
    version = answers.column(VERSION).to_numpy(zero_copy_only=False)
    chosen = np.ones(len(label), dtype=np.bool_)
    if versions is not None:
        chosen &= np.isin(version, list(versions))
    if variants is not None:
        chosen &= np.isin(variant, list(variants))
    invalid = _invalid_labels(label, task, classes)
    if bad := int((invalid & chosen).sum()):
        values = np.unique(label[invalid & chosen])
        if task is Task.REGRESSION:
            reason = "not finite"
        elif classes is None:
            reason = "not a whole number (a class)"
        else:
            known = np.asarray(classes, dtype=np.float64).tolist()
            reason = f"not one of the model's classes {known}"
        problems.add(
            "invalid",
            bad,
            f"{bad} label(s) cannot be compared with a {task.value} prediction ({reason}): "
            f"{_examples(values)}",
        )
    failed_rows = int((failed & chosen & ~invalid).sum())
    keep = chosen & ~invalid & ~failed
    order = np.argsort(answers.column(CAPTURED_AT).to_numpy()[keep], kind="stable")
    counts = problems.counts
    rows = PerformanceRows(
        # Labels read, those beyond the bound, and those in files or rows that could not be.
        labels=feedback.num_rows + dropped + counts.get("invalid", 0) - bad,
        labelled=int(keep.sum()),
        unmatched=counts.get("unmatched", 0),
        invalid=counts.get("invalid", 0),
        failed=failed_rows,
        other_variants=int((~chosen).sum()) + int((~matched & elsewhere).sum()),
        dropped=dropped,
        skipped_files=counts.get("skipped_files", 0),
        problems=problems.messages,
    )

    def kept(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        selected: npt.NDArray[Any] = values[keep][order]
        return selected

    return LabelledWindow(
        request_id=kept(labels_table.column(REQUEST_ID).to_numpy(zero_copy_only=False)),
        captured_at=kept(answers.column(CAPTURED_AT).to_numpy()),
        received_at=kept(labels_table.column(RECEIVED_AT).to_numpy()),
        variant=kept(variant),
        version=kept(version),
        prediction=kept(prediction),
        score=kept(answers.column(SCORE).fill_null(np.nan).to_numpy().astype(np.float64)),
        label=kept(label),
        rows=rows,
    )


# ---- answers without their labels, and labelled requests with their features ---------------


@dataclass(frozen=True, eq=False)
class Answers:
    """A version's successful live answers captured in a time window (request time order)."""

    request_id: ObjectArray
    captured_at: TimeArray
    prediction: FloatArray
    score: FloatArray

    @property
    def size(self) -> int:
        return len(self.request_id)


def read_answers(
    capture_dir: Path,
    start: datetime,
    end: datetime,
    *,
    versions: Collection[str] | None = None,
    shadow: bool = False,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Answers:
    """Successful answers captured in [start, end) (by `captured_at`), the newest `max_rows`;
    files that do not follow the capture layout are skipped (the label-free estimate is a
    warning, never a reason to fail a check)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    problems = _Problems()
    parts = []
    for file in reversed(partitions_since(capture_dir, REQUESTS, start)):
        if file.parent.name.removeprefix("date=") > end.date().isoformat():
            continue
        if not _readable_requests(file, problems):
            continue
        try:
            table = pq.read_table(file, columns=list(_REQUEST_COLUMNS)).cast(_REQUEST_TYPES)
        except (OSError, pa.ArrowException):
            continue
        table = _in_window(table, CAPTURED_AT, start, end)
        keep = pc.and_(
            pc.fill_null(pc.equal(table.column(SHADOW), shadow), False),
            pc.less(table.column(STATUS_CODE), SERVER_ERROR),
        )
        if versions is not None:
            keep = pc.and_(keep, pc.is_in(table.column(VERSION), pa.array(list(versions))))
        parts.append(table.filter(keep))
        if sum(part.num_rows for part in parts) >= max_rows:
            break
    table = pa.concat_tables(parts) if parts else _REQUEST_TYPES.empty_table()
    order = np.argsort(table.column(CAPTURED_AT).to_numpy(), kind="stable")[-max_rows:]
    table = table.take(pa.array(order))
    return Answers(
        request_id=table.column(REQUEST_ID).to_numpy(zero_copy_only=False),
        captured_at=table.column(CAPTURED_AT).to_numpy(),
        prediction=table.column(PREDICTION).fill_null(np.nan).to_numpy().astype(np.float64),
        score=table.column(SCORE).fill_null(np.nan).to_numpy().astype(np.float64),
    )


def read_labelled_requests(
    capture_dir: Path,
    features: Collection[str],
    start: datetime,
    end: datetime,
    *,
    label: str = LABEL,
    lookback: timedelta = DEFAULT_LOOKBACK,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> pa.Table:
    """Live requests whose label arrived in [start, end), with their features: what a model
    is evaluated on when captured traffic is replayed. Columns: the features as captured,
    `label` (the latest label, float), `captured_at`; the newest `max_rows`, in request time
    order. Requests answered with a server error still count (their features are real
    traffic); files outside the capture layout are skipped."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    problems = _Problems()
    feedback, _ = _read_feedback(
        partitions_since(capture_dir, FEEDBACK, start), start, end, max_rows, problems
    )
    wanted = pc.unique(feedback.column(REQUEST_ID))
    columns = [REQUEST_ID, SHADOW, CAPTURED_AT, *features]
    parts = []
    for file in reversed(partitions_since(capture_dir, REQUESTS, start - lookback)):
        if len(wanted) == 0:
            break
        if file.parent.name.removeprefix("date=") > end.date().isoformat():
            continue
        try:
            schema = pq.read_schema(file)
            if any(name not in schema.names for name in columns):
                continue
            table = (
                ds.dataset(str(file), format="parquet")
                .to_table(columns=columns, filter=ds.field(REQUEST_ID).isin(wanted))
                .select(columns)
            )
        except (OSError, pa.ArrowException):
            continue
        table = table.filter(pc.invert(pc.fill_null(table.column(SHADOW), False)))
        if table.num_rows == 0:
            continue
        ids = table.column(REQUEST_ID).to_numpy(zero_copy_only=False)
        _, first = np.unique(ids, return_index=True)
        table = table.take(pa.array(np.sort(first))).cast(
            table.schema.set(
                table.schema.get_field_index(CAPTURED_AT), pa.field(CAPTURED_AT, _TIMESTAMP)
            )
        )
        parts.append(table.drop_columns([SHADOW]))
        wanted = pc.filter(wanted, pc.invert(pc.is_in(wanted, value_set=table.column(REQUEST_ID))))
    if not parts:
        empty = {name: pa.array([], pa.float64()) for name in features}
        return pa.table(
            {**empty, label: pa.array([], pa.float64()), CAPTURED_AT: pa.array([], _TIMESTAMP)}
        )
    requests = pa.concat_tables(parts, promote_options="permissive")
    positions = pc.index_in(requests.column(REQUEST_ID), value_set=feedback.column(REQUEST_ID))
    labels = feedback.column(LABEL).take(positions)
    table = requests.drop_columns([REQUEST_ID]).append_column(label, labels)
    table = table.take(pa.array(np.argsort(table.column(CAPTURED_AT).to_numpy(), kind="stable")))
    return table.select([*features, label, CAPTURED_AT])
