"""A cloud endpoint's captured answers and ground truth, written into the capture layout.

The drift check (`activities/drift/window.py`), the performance window
(`activities/drift/performance_window.py`) and the canary (`activities/rollout/window.py`) read
the local endpoint's capture layout (`activities/local/capture.py`). A cloud backend's
`CaptureSource` (SageMaker Data Capture on S3, Vertex request-response logging in BigQuery)
reads its platform's records partition by partition (an hour of S3 objects, an hour of a
BigQuery table) and hands them here as `CapturedAnswer`s and `GroundTruth`s; `CaptureMirror`
writes them as the layout's Parquet files under the model's capture directory, so those readers
work unchanged on every backend.

What is shared by the clouds' formats lives here too:
- request payloads: CSV rows (features in the spec's order) or JSON (`{"features": {...}}`,
  `{"instances": [...]}`, one object of features, or a list of objects / positional lists);
- response payloads: CSV values, or JSON (`{"predictions": [...]}`, a list, a number, or an
  object naming `prediction` / `predicted_label` / `label` and `score` / `probability` /
  `probabilities`); a bare number is a score or a class as the capture settings say;
- ground truth in SageMaker Model Monitor's merge format (`groundTruthData`, `eventMetadata.
  eventId`), which the Vertex backend also reads from a GCS prefix.

A request of several rows gets the ids `<id>:0`, `<id>:1`, ...; ground truth with several
values for one event id is keyed the same way. Records that cannot be read are counted and
described (`CaptureProblems`), never raised: one malformed line does not hide an hour of
traffic.

`CaptureMirror` keeps, beside the layout, which source (object and its ETag, or table hour)
produced which files and which partitions are complete, so a sync reads only what is new or
changed; a lock file keeps two activities of one worker from converting at once.

`CaptureRun` is the sync every cloud shares: the mirror open, one hour's partition read unless
it is complete and marked complete once it has settled, ground truth read from an object store's
hour prefixes; a backend's `sync` only says which partitions it has and how it reads them.
"""

from __future__ import annotations

import base64
import csv
import fcntl
import hashlib
import io
import json
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from pydantic import BaseModel

from activities.local.capture import (
    CAPTURED_AT,
    ERROR,
    FEEDBACK,
    FEEDBACK_SCHEMA,
    GENERATION,
    LABEL,
    LATENCY_MS,
    META_FIELDS,
    PREDICTION,
    RECEIVED_AT,
    REQUEST_ID,
    REQUESTS,
    SCORE,
    SHADOW,
    STATUS_CODE,
    VARIANT,
    VERSION,
    capture_dir,
    partition,
)
from activities.ports import CaptureSync, ObjectStore
from workflows.spec.common import CaptureSettings
from workflows.spec.models import FeatureKind, ModelSpec, Task

MAX_DESCRIBED = 20
P = ParamSpec("P")
# A binary classifier's score at or above this is the positive class.
THRESHOLD = 0.5
# Which fields of a JSON prediction object hold the class and the score.
_CLASS_KEYS = ("prediction", "predicted_label", "label", "class")
_SCORE_KEYS = ("score", "probability", "probabilities", "scores")


@dataclass(frozen=True)
class CapturedAnswer:
    """One answer a variant gave, as a platform logged it."""

    request_id: str
    variant: str
    captured_at: datetime
    features: dict[str, Any]
    prediction: float | None
    score: float | None
    shadow: bool = False


@dataclass(frozen=True)
class GroundTruth:
    request_id: str
    label: float
    received_at: datetime


@dataclass
class CaptureProblems:
    """What could not be read: counts by kind and the first descriptions."""

    counts: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def add(self, kind: str, message: str, count: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + count
        if len(self.messages) < MAX_DESCRIBED:
            self.messages.append(message)


# ---- payloads --------------------------------------------------------------------------------


class PayloadError(ValueError):
    """A captured payload that cannot be read as our formats describe."""


def decode(data: str, encoding: str) -> str:
    """SageMaker's `encoding`: CSV and JSON are text as captured, BASE64 wraps the bytes."""
    if encoding.upper() == "BASE64":
        try:
            return base64.b64decode(data, validate=True).decode()
        except (ValueError, UnicodeDecodeError) as error:
            raise PayloadError(f"undecodable base64 payload: {error}") from None
    return data


def csv_rows(text: str) -> list[list[str]]:
    return [row for row in csv.reader(io.StringIO(text.strip())) if row]


def request_rows(payload: str, content: str, spec: ModelSpec) -> list[dict[str, Any]]:
    """The feature rows of a request payload (`content`: "CSV" or "JSON")."""
    names = spec.feature_names
    if content == "CSV":
        rows = []
        for values in csv_rows(payload):
            if len(values) != len(names):
                raise PayloadError(
                    f"a CSV request row has {len(values)} values, the model {len(names)} features"
                )
            rows.append(dict(zip(names, values, strict=True)))
        return rows
    return instances(_json(payload), names)


def instances(document: Any, names: list[str]) -> list[dict[str, Any]]:
    """Feature rows from a JSON request in any of the shapes the module docstring lists."""
    if isinstance(document, dict):
        for key in ("features", "instances", "inputs"):
            if key in document:
                return instances(document[key], names)
        return [document]
    if isinstance(document, list):
        if document and all(isinstance(item, dict) for item in document):
            return [dict(item) for item in document]
        if document and all(isinstance(item, list) for item in document):
            return [_positional(item, names) for item in document]
        if all(not isinstance(item, dict | list) for item in document):
            return [_positional(document, names)]
    raise PayloadError(f"a JSON request that holds no feature rows: {str(document)[:80]}")


def _positional(values: list[Any], names: list[str]) -> dict[str, Any]:
    if len(values) != len(names):
        raise PayloadError(f"a positional row has {len(values)} values, not {len(names)}")
    return dict(zip(names, values, strict=True))


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise PayloadError(f"not JSON: {error}") from None


Output = tuple[float | None, float | None]  # (prediction, score)


def response_outputs(
    payload: str, content: str, spec: ModelSpec, settings: CaptureSettings
) -> list[Output]:
    """(prediction, score) per answered row of a response payload."""
    if content == "CSV":
        return [_row_output(row, spec, settings) for row in csv_rows(payload)]
    document = _json(payload)
    if isinstance(document, dict):
        for key in ("predictions", "outputs", "results"):
            if key in document:
                document = document[key]
                break
        else:
            return [_named_output(document, spec, settings)]
    items = document if isinstance(document, list) else [document]
    return [prediction_output(item, spec, settings) for item in items]


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PayloadError(f"not a number: {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise PayloadError(f"not a finite number: {value!r}")
    return number


def _single(value: float, spec: ModelSpec, settings: CaptureSettings) -> Output:
    """A bare number: the regression output, a score or a class (the settings say which)."""
    if spec.task is Task.REGRESSION:
        return value, None
    if settings.prediction_output == "class":
        return value, None
    if not 0.0 <= value <= 1.0:
        raise PayloadError(f"a score outside [0, 1]: {value}")
    return (1.0 if value >= THRESHOLD else 0.0), value


def _row_output(values: list[str], spec: ModelSpec, settings: CaptureSettings) -> Output:
    if len(values) == 1:
        return _single(_number(values[0]), spec, settings)
    if len(values) == 2:  # `class,score`, as several built-in containers answer
        return _number(values[0]), _number(values[1])
    raise PayloadError(f"a CSV answer of {len(values)} values")


def prediction_output(item: Any, spec: ModelSpec, settings: CaptureSettings) -> Output:
    """One prediction as a JSON document (a number, a list of class probabilities, an object)."""
    if isinstance(item, dict):
        return _named_output(item, spec, settings)
    if isinstance(item, list):
        # Class probabilities: the last is the positive class's (scikit-learn's order).
        if len(item) == 2 and spec.task is Task.CLASSIFICATION:
            score = _number(item[1])
            return (1.0 if score >= THRESHOLD else 0.0), score
        if len(item) == 1:
            return _single(_number(item[0]), spec, settings)
        raise PayloadError(f"a prediction list of {len(item)} values")
    return _single(_number(item), spec, settings)


def _named_output(item: dict[str, Any], spec: ModelSpec, settings: CaptureSettings) -> Output:
    score: float | None = None
    for key in _SCORE_KEYS:
        if key in item and item[key] is not None:
            value = item[key]
            score = _number(value[-1] if isinstance(value, list) else value)
            break
    prediction: float | None = None
    for key in _CLASS_KEYS:
        if key in item and item[key] is not None:
            prediction = _number(item[key])
            break
    if prediction is None and score is None:
        raise PayloadError(f"an answer naming no prediction or score: {sorted(item)[:5]}")
    if prediction is None and score is not None:
        return _single(score, spec, settings)
    return prediction, score


def answers(
    base_id: str,
    variant: str,
    captured_at: datetime,
    rows: list[dict[str, Any]],
    outputs: list[Output],
    *,
    shadow: bool = False,
) -> list[CapturedAnswer]:
    """One answer per row (`<id>:<n>` when a request holds several)."""
    if len(rows) != len(outputs):
        raise PayloadError(f"{len(rows)} request row(s) but {len(outputs)} answer(s)")
    several = len(rows) > 1
    return [
        CapturedAnswer(
            request_id=f"{base_id}:{index}" if several else base_id,
            variant=variant,
            captured_at=captured_at,
            features=row,
            prediction=prediction,
            score=score,
            shadow=shadow,
        )
        for index, (row, (prediction, score)) in enumerate(zip(rows, outputs, strict=True))
    ]


def ground_truth_lines(
    text: str, received_at: datetime, source: str, problems: CaptureProblems
) -> list[GroundTruth]:
    """Ground truth in Model Monitor's merge format, one JSON object per line:

        {"groundTruthData": {"data": "1", "encoding": "CSV"},
         "eventMetadata": {"eventId": "..."}, "eventVersion": "0"}

    (SageMaker Developer Guide, "Ingest Ground Truth labels and merge them with predictions").
    """
    found: list[GroundTruth] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            event_id = str(record["eventMetadata"]["eventId"])
            data = record["groundTruthData"]
            body = decode(str(data["data"]), str(data.get("encoding", "CSV")))
            if str(data.get("encoding", "CSV")).upper() == "JSON":
                parsed = json.loads(body)
                values = parsed if isinstance(parsed, list) else [parsed]
                values = [v.get("label") if isinstance(v, dict) else v for v in values]
            else:
                values = [value for row in csv_rows(body) for value in row]
            labels = [_number(value) for value in values]
        except (KeyError, TypeError, ValueError) as error:
            problems.add("invalid_labels", f"{source} line {number}: {error}")
            continue
        several = len(labels) > 1
        found += [
            GroundTruth(f"{event_id}:{index}" if several else event_id, label, received_at)
            for index, label in enumerate(labels)
        ]
    return found


# ---- the capture directory -------------------------------------------------------------------


class _Manifest(BaseModel):  # mutable: the sync updates it as it goes
    # source -> its fingerprint (ETag, or "" for a re-queried table partition) and files.
    sources: dict[str, tuple[str, list[str]]] = {}
    # Partitions read completely (an hour that ended long enough ago): never read again.
    complete: list[str] = []


MANIFEST = ".cloud-capture.json"
LOCK = ".cloud-capture.lock"


class CaptureMirror:
    """The capture layout of one model, filled from a cloud's records."""

    def __init__(
        self, directory: Path, spec: ModelSpec, reference: pa.Schema | None = None
    ) -> None:
        self.directory = directory
        self.spec = spec
        # The baseline holdout's schema: features are typed as the model was trained on, so
        # the drift check compares like with like (else numbers as float64, categories as text).
        self.reference = reference
        self._manifest = _Manifest()
        self._complete: set[str] = set()

    @contextmanager
    def open(self) -> Iterator[CaptureMirror]:
        """Hold the directory's lock, with its manifest loaded; saved on a clean exit."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                path = self.directory / MANIFEST
                if path.is_file():
                    try:
                        self._manifest = _Manifest.model_validate_json(path.read_text())
                    except ValueError:
                        self._manifest = _Manifest()  # a broken manifest: convert again
                self._complete = set(self._manifest.complete)
                yield self
                self._manifest.complete = sorted(self._complete)
                _write_text(path, self._manifest.model_dump_json())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def fingerprint(self, source: str) -> str | None:
        known = self._manifest.sources.get(source)
        return None if known is None else known[0]

    def is_complete(self, key: str) -> bool:
        return key in self._complete

    def mark_complete(self, key: str) -> None:
        self._complete.add(key)

    def write_answers(self, source: str, fingerprint: str, rows: list[CapturedAnswer]) -> None:
        """Replace what `source` produced before with `rows` (one file per UTC day)."""
        by_day: dict[date, list[CapturedAnswer]] = defaultdict(list)
        for row in rows:
            by_day[row.captured_at.astimezone(UTC).date()].append(row)
        schema = self._request_schema()
        files = [
            self._write(
                partition(self.directory, REQUESTS, day),
                source,
                _answers_table(day_rows, schema, self.spec),
            )
            for day, day_rows in sorted(by_day.items())
        ]
        self._replace(source, fingerprint, files)

    def write_labels(self, source: str, fingerprint: str, labels: list[GroundTruth]) -> None:
        by_day: dict[date, list[GroundTruth]] = defaultdict(list)
        for label in labels:
            by_day[label.received_at.astimezone(UTC).date()].append(label)
        files = [
            self._write(partition(self.directory, FEEDBACK, day), source, _labels_table(rows))
            for day, rows in sorted(by_day.items())
        ]
        self._replace(source, fingerprint, files)

    def _request_schema(self) -> pa.Schema:
        features = []
        for feature in self.spec.features:
            if self.reference is not None and feature.name in self.reference.names:
                kind = self.reference.field(feature.name).type
            else:
                kind = pa.float64() if feature.kind is FeatureKind.NUMERIC else pa.string()
            features.append(pa.field(feature.name, kind))
        return pa.schema([*META_FIELDS, *features])

    def _write(self, directory: Path, source: str, table: pa.Table) -> str:
        directory.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(source.encode()).hexdigest()[:20]
        target = directory / f"part-cloud-{digest}.parquet"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".parquet")
        os.close(fd)
        pq.write_table(table, tmp)
        os.replace(tmp, target)
        return str(target.relative_to(self.directory))

    def _replace(self, source: str, fingerprint: str, files: list[str]) -> None:
        old = self._manifest.sources.get(source, ("", []))[1]
        for stale in set(old) - set(files):
            (self.directory / stale).unlink(missing_ok=True)
        self._manifest.sources[source] = (fingerprint, files)


def _coerce(value: Any, kind: pa.DataType) -> Any:
    """A captured value (text from CSV, anything from JSON) as the column's type; a value that
    cannot be one is missing (the drift check counts missing values)."""
    if value is None or value == "":
        return None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON's 3.0 for the category 3
        return str(value)
    if pa.types.is_boolean(kind):
        text = str(value).strip().lower()
        return {"true": True, "1": True, "false": False, "0": False}.get(text)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    if pa.types.is_integer(kind):
        return int(number) if number.is_integer() else None
    return number


def _answers_table(rows: list[CapturedAnswer], schema: pa.Schema, spec: ModelSpec) -> pa.Table:
    """The layout's columns (activities/local/capture.py), features as `schema` types them."""
    columns: dict[str, list[Any]] = {
        REQUEST_ID: [r.request_id for r in rows],
        VARIANT: [r.variant for r in rows],
        VERSION: [r.variant.removeprefix("v") for r in rows],
        SHADOW: [r.shadow for r in rows],
        # Cloud endpoints stamp no generation: the canary reads a variant's window by time.
        GENERATION: [0] * len(rows),
        CAPTURED_AT: [r.captured_at.astimezone(UTC) for r in rows],
        # The platforms log no per-request latency (their metrics store has it).
        LATENCY_MS: [math.nan] * len(rows),
        # A captured answer is a successful one: failed calls are not captured.
        STATUS_CODE: [200] * len(rows),
        ERROR: [None] * len(rows),
        PREDICTION: [r.prediction for r in rows],
        SCORE: [r.score for r in rows],
    }
    for feature in spec.features:
        kind = schema.field(feature.name).type
        columns[feature.name] = [_coerce(r.features.get(feature.name), kind) for r in rows]
    return pa.table(columns, schema=schema)


def _labels_table(labels: list[GroundTruth]) -> pa.Table:
    return pa.table(
        {
            REQUEST_ID: [g.request_id for g in labels],
            LABEL: [g.label for g in labels],
            RECEIVED_AT: [g.received_at.astimezone(UTC) for g in labels],
        },
        schema=FEEDBACK_SCHEMA,
    )


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def hours(start: datetime, end: datetime) -> Iterable[datetime]:
    """Every UTC hour that overlaps [start, end), as its start."""
    current = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end = end.astimezone(UTC)
    while current < end:
        yield current
        current += timedelta(hours=1)


def reference_schema(home: Path, spec: ModelSpec, store: ObjectStore | None) -> pa.Schema | None:
    """The baseline holdout's Arrow schema (mirrored from the bucket once: it never changes),
    or None when it cannot be read (the capture is then typed from the spec alone)."""
    from activities.loop.data_window import resolve_uri
    from activities.mirror import DataMirror

    try:
        local, _ = DataMirror(home, lambda _: store).localize(spec, fields=("baseline_holdout",))
        schema: pa.Schema = pq.read_schema(resolve_uri(home, local.data.baseline_holdout))
    except (OSError, ValueError, pa.ArrowException):
        return None
    return schema


# ---- the sync --------------------------------------------------------------------------------


def capture_off(home: Path, spec: ModelSpec, note: str) -> CaptureSync:
    """The sync of a model whose capture is off in its settings: nothing read, `note` said."""
    result = CaptureSync(directory=capture_dir(home, spec))
    result.notes.append(note)
    return result


@dataclass
class CaptureRun:
    """One sync of a model's capture: its mirror open, what it read, and when it started."""

    mirror: CaptureMirror
    store: ObjectStore
    heartbeat: Callable[[str], None]
    # How long after an hour ends its platform may still add records to it.
    settle: timedelta
    now: datetime
    start: datetime
    end: datetime
    result: CaptureSync
    problems: CaptureProblems = field(default_factory=CaptureProblems)

    @classmethod
    @contextmanager
    def open(
        cls,
        home: Path,
        spec: ModelSpec,
        store: ObjectStore,
        start: datetime,
        end: datetime,
        heartbeat: Callable[[str], None],
        settle: timedelta,
    ) -> Iterator[CaptureRun]:
        """The run over [start, now or end); its result holds the problems on a clean exit."""
        directory = capture_dir(home, spec)
        now = datetime.now(UTC)
        result = CaptureSync(directory=directory)
        reference = reference_schema(home, spec, store)
        with CaptureMirror(directory, spec, reference).open() as mirror:
            run = cls(mirror, store, heartbeat, settle, now, start, min(end, now), result)
            yield run
        result.problems = run.problems.counts
        result.notes += run.problems.messages

    def hours(self) -> Iterable[datetime]:
        return hours(self.start, self.end)

    def settled(self, hour: datetime) -> bool:
        """The hour ended `settle` ago: nothing more will be added to it."""
        return hour + timedelta(hours=1) + self.settle <= self.now

    def partition(
        self,
        key: str,
        hour: datetime,
        describe: str,
        read: Callable[P, object],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        """`read(*args, **kwargs)` one hour's partition `key` unless it is complete; complete
        once it has settled."""
        if self.mirror.is_complete(key):
            self.result.partitions_skipped += 1
            return
        self.heartbeat(describe)
        read(*args, **kwargs)
        if self.settled(hour):
            self.mirror.mark_complete(key)

    def ground_truth_files(
        self, prefix: str, hour: datetime, read_text: Callable[[str], str]
    ) -> None:
        """The hour's ground-truth files under `prefix/yyyy/mm/dd/hh/`, new or changed ones."""
        for stored in self.store.list(f"{prefix}/{hour:%Y/%m/%d/%H}/"):
            if self.mirror.fingerprint(stored.uri) == stored.etag:
                continue
            labels = ground_truth_lines(
                read_text(stored.uri), stored.updated, stored.uri, self.problems
            )
            self.mirror.write_labels(stored.uri, stored.etag, labels)
            self.result.sources_read += 1
            self.result.labels += len(labels)
