"""The loop's data window (local backend): select, validate coverage, mix with the baseline.

Reads the last `spec.loop.window.days` UTC days of labelled daily partitions
(`<labelled>/date=YYYY-MM-DD/*.parquet`) plus the files a trigger named, checks coverage
(schema, rows, days, label coverage, class balance) and, when it suffices, writes what training
and evaluation read under `<home>/runs/<model>/<loop id>/data/`:

- `training.parquet`: production training rows mixed with baseline-holdout rows so that
  production rows are `production_share` of it (feedback-loop prevention);
- `holdout.parquet`: `holdout_fraction` of the labelled production rows, by a stable row hash;
- `baseline_eval.parquet`: the half of the immutable baseline holdout never used for training.

Outputs depend only on the input files' contents (rows are split and ordered by content hashes,
files carry no wall-clock metadata), so a retried activity rewrites them byte for byte. Every
DatasetFile uri is an absolute path; spec paths are relative to the retrain home unless absolute.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.files import plain_permissions
from activities.mirror import DataMirror, mirrored_etag, remote_text, remote_uri
from workflows.common import metrics
from workflows.common.errors import ErrorType
from workflows.common.names import ActivityName
from workflows.loop.models import CoverageCheck, DatasetFile, DataWindow, DataWindowRequest
from workflows.spec.models import DataWindowPolicy, FeatureKind, ModelSpec, Task

_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_LOOP_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,200}$")
# pandas' row hash takes a 16-character key: separate keys decorrelate the two splits.
_HOLDOUT_KEY = "retrain-holdout."
_BASELINE_KEY = "retrain-baseline"
# Timestamps are normalised to one type so files written with other units or without a zone
# (read as UTC) still concatenate.
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_MAX_LISTED_DAYS = 10


@dataclass(frozen=True)
class InputFile:
    """One input file: its record (hash, rows, day) and its contents."""

    file: DatasetFile
    table: pa.Table


def resolve_uri(home: Path, uri: str) -> Path:
    """A spec or trigger path: absolute as given, otherwise relative to the retrain home."""
    path = Path(uri)
    return path if path.is_absolute() else home / path


def loop_data_dir(home: Path, model: str, loop_id: str) -> Path:
    # The loop id becomes a directory name: refuse anything that could escape `runs/`.
    if not _LOOP_ID.fullmatch(loop_id):
        raise ApplicationError(
            f"invalid loop id {loop_id!r}", type=ErrorType.INVALID_REQUEST, non_retryable=True
        )
    return home / "runs" / model / loop_id / "data"


def invalid_data(message: str) -> ApplicationError:
    return ApplicationError(message, type=ErrorType.INVALID_DATA, non_retryable=True)


def window_bounds(as_of: datetime, days: int) -> tuple[date, date]:
    """The `days` UTC calendar days ending on `as_of`'s UTC date, inclusive."""
    end = as_of.astimezone(UTC).date()
    return end - timedelta(days=days - 1), end


def _partition(name: str) -> date | None:
    match = _PARTITION.fullmatch(name)
    if match is None:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def partition_day(path: Path) -> date | None:
    """The day of a file inside a `date=YYYY-MM-DD` partition directory, if it is in one."""
    return _partition(path.parent.name)


def list_window(
    home: Path, spec: ModelSpec, start: date, end: date, extra_uris: Sequence[str]
) -> tuple[str, list[Path]]:
    """The exact retrieval (as text) and the files it names: partitions in range, then extras."""
    labelled = resolve_uri(home, spec.data.labelled).resolve()
    window: list[Path] = []
    if labelled.is_dir():
        for directory in sorted(labelled.iterdir()):
            day = _partition(directory.name)
            if directory.is_dir() and day is not None and start <= day <= end:
                # Skip hidden and marker files (temp files of atomic writers, `_SUCCESS`).
                window.extend(
                    f
                    for f in sorted(directory.glob("*.parquet"))
                    if not f.name.startswith((".", "_"))
                )
    extras = sorted({resolve_uri(home, uri).resolve() for uri in extra_uris})
    listed = set(window)
    query = f"{labelled}/date=*/*.parquet WHERE date>={start} AND date<={end}"
    if extras:
        query += " + extra: " + ", ".join(str(path) for path in extras)
    return query, window + [path for path in extras if path not in listed]


def _heartbeat(detail: str) -> None:
    # Plain functions stay callable (and unit-testable) outside an activity.
    if activity.in_activity():
        activity.heartbeat(detail)


def read_parquet(path: Path) -> InputFile:
    """Read one file, hashing exactly the bytes parsed; unreadable or corrupt -> InvalidData."""
    try:
        data = path.read_bytes()
        table = pq.read_table(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as exc:
        raise invalid_data(f"cannot read Parquet file {path}: {exc}") from exc
    _heartbeat(str(path))
    record = DatasetFile(
        uri=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        rows=table.num_rows,
        day=partition_day(path),
    )
    return InputFile(record, table)


def _is_numeric(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)
    )


def schema_problems(
    spec: ModelSpec, reads: Sequence[InputFile], *, require_timestamp: bool = True
) -> list[str]:
    """One line per problem column: missing from files, not numeric, not a timestamp, mixed."""
    numeric = {f.name for f in spec.features if f.kind is FeatureKind.NUMERIC}
    if spec.task is Task.REGRESSION:
        numeric.add(spec.label)
    required = [*spec.feature_names, spec.label]
    if require_timestamp:
        required.append(spec.data.timestamp_column)
    problems: list[str] = []
    for column in required:
        missing = [r.file.uri for r in reads if column not in r.table.column_names]
        if missing:
            problems.append(
                f"missing column {column!r} in {len(missing)} of {len(reads)} files "
                f"(e.g. {missing[0]})"
            )
            continue
        # An all-null column (type null) fits any type; it is a data gap, not a schema error.
        types = {
            r.table.schema.field(column).type
            for r in reads
            if not pa.types.is_null(r.table.schema.field(column).type)
        }
        names = ", ".join(sorted(str(t) for t in types))
        if column == spec.data.timestamp_column:
            if not all(pa.types.is_timestamp(t) for t in types):
                problems.append(f"timestamp column {column!r} is not a timestamp ({names})")
        elif column in numeric:
            if not all(_is_numeric(t) for t in types):
                problems.append(f"column {column!r} must be numeric ({names})")
        elif len(types) > 1 and not all(_is_numeric(t) for t in types):
            problems.append(f"column {column!r} has mixed types across files ({names})")
    return problems


@dataclass(frozen=True)
class Coverage:
    rows: int
    labelled_rows: int
    days: frozenset[date]
    class_counts: dict[str, int]


def measure_coverage(
    spec: ModelSpec, reads: Sequence[InputFile], start: date, end: date
) -> Coverage:
    """Row, label, day and class counts from whichever files have the columns (per file)."""
    label, timestamp = spec.label, spec.data.timestamp_column
    labelled = 0
    days: set[date] = set()
    classes: Counter[str] = Counter()
    for read in reads:
        table = read.table
        if label in table.column_names:
            column = table[label]
            labelled += table.num_rows - column.null_count
            if spec.task is Task.CLASSIFICATION:
                counts = pc.value_counts(pc.drop_null(column))
                values = counts.field("values").to_pylist()
                for value, count in zip(values, counts.field("counts").to_pylist(), strict=True):
                    classes[str(value)] += count
        if timestamp in table.column_names and pa.types.is_timestamp(table[timestamp].type):
            # Casting an instant to date32 takes its UTC date.
            for day in pc.unique(pc.cast(table[timestamp], pa.date32())).to_pylist():
                if day is not None and start <= day <= end:
                    days.add(day)
    return Coverage(
        rows=sum(r.table.num_rows for r in reads),
        labelled_rows=labelled,
        days=frozenset(days),
        class_counts=dict(sorted(classes.items())),
    )


def _missing_days(present: frozenset[date], start: date, end: date) -> str:
    missing = [
        start + timedelta(days=i)
        for i in range((end - start).days + 1)
        if start + timedelta(days=i) not in present
    ]
    if not missing:
        return ""
    shown = ", ".join(d.isoformat() for d in missing[:_MAX_LISTED_DAYS])
    more = f" and {len(missing) - _MAX_LISTED_DAYS} more" if len(missing) > _MAX_LISTED_DAYS else ""
    return f"missing: {shown}{more}"


def coverage_checks(
    spec: ModelSpec,
    files: int,
    problems: Sequence[str],
    coverage: Coverage,
    start: date,
    end: date,
    empty_reason: str,
) -> list[CoverageCheck]:
    policy = spec.loop.window
    expected = (end - start).days + 1
    days_fraction = len(coverage.days) / expected
    label_coverage = coverage.labelled_rows / coverage.rows if coverage.rows else 0.0
    checks = [
        CoverageCheck(
            name="files_found",
            passed=files >= 1,
            value=files,
            threshold=1,
            detail=empty_reason,
        ),
        CoverageCheck(
            name="schema",
            passed=not problems,
            value=len(problems),
            threshold=0,
            detail="; ".join(problems),
        ),
        CoverageCheck(
            name="min_rows",
            passed=coverage.labelled_rows >= policy.min_rows,
            value=coverage.labelled_rows,
            threshold=policy.min_rows,
            detail=f"{coverage.labelled_rows} labelled rows of {coverage.rows}",
        ),
        CoverageCheck(
            name="days_present",
            passed=days_fraction >= policy.min_days_fraction,
            value=days_fraction,
            threshold=policy.min_days_fraction,
            detail=f"{len(coverage.days)} of {expected} days; "
            + (_missing_days(coverage.days, start, end) or "none missing"),
        ),
        CoverageCheck(
            name="label_coverage",
            passed=coverage.rows > 0 and label_coverage >= policy.min_label_coverage,
            value=label_coverage,
            threshold=policy.min_label_coverage,
            detail=f"{coverage.labelled_rows} of {coverage.rows} rows have a label",
        ),
    ]
    if spec.task is Task.CLASSIFICATION:
        checks.extend(_class_checks(policy, coverage.class_counts))
    return checks


def _class_checks(policy: DataWindowPolicy, counts: dict[str, int]) -> list[CoverageCheck]:
    total = sum(counts.values())
    shares = {label: count / total for label, count in counts.items()} if total else {}
    outside = [
        label
        for label, share in shares.items()
        if not policy.min_class_share <= share <= policy.max_class_share
    ]
    listed = ", ".join(f"{label}={share:.3f}" for label, share in shares.items()) or "none"
    return [
        CoverageCheck(
            name="classes_present",
            passed=len(counts) >= 2,
            value=len(counts),
            threshold=2,
            detail=f"classes: {', '.join(counts) or 'none'}",
        ),
        CoverageCheck(
            name="class_balance",
            passed=bool(shares) and not outside,
            value=min(shares.values(), default=0.0),
            threshold=policy.min_class_share,
            detail=f"shares {listed} must lie within "
            f"[{policy.min_class_share:g}, {policy.max_class_share:g}]"
            + (f"; outside: {', '.join(outside)}" if outside else ""),
        ),
    ]


def output_columns(spec: ModelSpec, reads: Sequence[InputFile]) -> list[str]:
    """Columns of the written datasets: features, label, timestamp, then the segment column
    when the production files have one."""
    columns = [*spec.feature_names, spec.label, spec.data.timestamp_column]
    segment = spec.segment_column
    present = any(segment in r.table.column_names for r in reads)
    if segment is not None and segment not in columns and present:
        columns.append(segment)
    return columns


def _conform(table: pa.Table, columns: Sequence[str], timestamp: str) -> pa.Table:
    """Select the output columns (absent ones as nulls) with the timestamp normalised to UTC us."""
    arrays = []
    for column in columns:
        if column not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, _TIMESTAMP if column == timestamp else None))
        elif column == timestamp:
            # Unsafe only in dropping sub-microsecond digits (pandas writes nanoseconds).
            arrays.append(pc.cast(table[column], _TIMESTAMP, safe=False))
        else:
            arrays.append(table[column])
    return pa.table(arrays, names=list(columns))


def combine_production(spec: ModelSpec, reads: Sequence[InputFile]) -> pa.Table:
    """Every input row in one table; numeric types widened where files differ (int -> float)."""
    columns = output_columns(spec, reads)
    tables = [_conform(r.table, columns, spec.data.timestamp_column) for r in reads]
    return pa.concat_tables(tables, promote_options="permissive")


def labelled_rows(table: pa.Table, label: str) -> pa.Table:
    return table.filter(pc.is_valid(table[label]))


def row_hashes(table: pa.Table, key: str) -> np.ndarray:
    """A uint64 per row from its content only: stable across processes, runs and file order."""
    frame = table.to_pandas()
    hashes: np.ndarray = pd.util.hash_pandas_object(frame, index=False, hash_key=key).to_numpy()
    return hashes


def hash_fraction(hashes: np.ndarray) -> np.ndarray:
    """Map row hashes uniformly onto [0, 1) (the top 53 bits, exactly representable)."""
    fractions: np.ndarray = (hashes >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return fractions


def _in_hash_order(table: pa.Table, hashes: np.ndarray) -> pa.Table:
    # Content order, not file order: the same rows always give the same file.
    return table.take(pa.array(np.argsort(hashes, kind="stable")))


@dataclass(frozen=True)
class Mix:
    training: pa.Table
    holdout: pa.Table
    baseline_eval: pa.Table
    production_rows: int
    baseline_rows: int


def mix_datasets(
    production: pa.Table,
    baseline: pa.Table,
    policy: DataWindowPolicy,
    baseline_ratio: float | None = None,
) -> Mix:
    """Split production into train/holdout and the baseline 50/50, then mix the training set.

    Production rows are `production_share` of the training set (or, with `baseline_ratio`,
    baseline rows are that many per production row: after a regime change); when the
    baseline's training half is too small for that, all of it is used and the counts say so.
    """
    prod_hashes = row_hashes(production, _HOLDOUT_KEY)
    in_holdout = hash_fraction(prod_hashes) < policy.holdout_fraction
    base_hashes = row_hashes(baseline, _BASELINE_KEY)
    base_for_training = hash_fraction(base_hashes) < 0.5

    prod_train = pa.array(np.flatnonzero(~in_holdout))
    if baseline_ratio is None:
        baseline_ratio = (1 - policy.production_share) / policy.production_share
    wanted = round(len(prod_train) * baseline_ratio)
    pool = np.flatnonzero(base_for_training)
    # The pool's lowest hashes: a uniform, content-determined sample.
    chosen = pool[np.argsort(base_hashes[pool], kind="stable")][:wanted]

    training = pa.concat_tables([production.take(prod_train), baseline.take(pa.array(chosen))])
    training_hashes = np.concatenate([prod_hashes[~in_holdout], base_hashes[chosen]])
    holdout = np.flatnonzero(in_holdout)
    evaluation = np.flatnonzero(~base_for_training)
    return Mix(
        training=_in_hash_order(training, training_hashes),
        holdout=_in_hash_order(production.take(pa.array(holdout)), prod_hashes[holdout]),
        baseline_eval=_in_hash_order(baseline.take(pa.array(evaluation)), base_hashes[evaluation]),
        production_rows=len(prod_train),
        baseline_rows=len(chosen),
    )


def write_parquet_atomic(table: pa.Table, path: Path) -> DatasetFile:
    """Write without schema metadata via a temp file and os.replace; readers never see half."""
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(None), sink)
    data: bytes = sink.getvalue().to_pybytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp name is hidden so window listings skip it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".parquet")
    plain_permissions(fd)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return DatasetFile(
        uri=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        rows=table.num_rows,
        day=partition_day(path),
    )


def align_baseline(
    home: Path, spec: ModelSpec, production: pa.Table
) -> tuple[InputFile, pa.Table, pa.Table]:
    """The baseline holdout's labelled rows, and production, in one common schema."""
    read = read_parquet(resolve_uri(home, spec.data.baseline_holdout).resolve())
    # A baseline needs no timestamps: only the features and the label are required.
    problems = schema_problems(spec, [read], require_timestamp=False)
    if problems:
        raise invalid_data(
            f"baseline holdout {read.file.uri} does not match the model's schema: "
            + "; ".join(problems)
        )
    try:
        baseline = _conform(read.table, production.column_names, spec.data.timestamp_column)
        # Widen where the two differ (int vs float, all-null columns) so all outputs agree.
        schema = pa.unify_schemas(
            [production.schema, baseline.schema], promote_options="permissive"
        )
        production, baseline = production.cast(schema), baseline.cast(schema)
    except pa.ArrowException as exc:
        raise invalid_data(
            f"baseline holdout {read.file.uri} does not fit the production data's types: {exc}"
        ) from exc
    return read, production, labelled_rows(baseline, spec.label)


def regime_in_window(regime_start: datetime | None, as_of: datetime, days: int) -> datetime | None:
    """The regime change the window starts at: None when there is none, or when it is older
    than the window's first day (the window is new-regime data anyway) or in the future."""
    if regime_start is None:
        return None
    start, _ = window_bounds(as_of, days)
    moment = regime_start.astimezone(UTC)
    if moment.date() < start or moment > as_of.astimezone(UTC):
        return None
    return moment


def since_regime(read: InputFile, timestamp: str, regime: datetime) -> InputFile:
    """The file's rows from the regime change on (a file without a usable timestamp column is
    kept whole: the schema check reports it)."""
    table = read.table
    if timestamp not in table.column_names or not pa.types.is_timestamp(table[timestamp].type):
        return read
    times = pc.cast(table[timestamp], _TIMESTAMP, safe=False)
    keep = pc.fill_null(pc.greater_equal(times, pa.scalar(regime, _TIMESTAMP)), False)
    return InputFile(read.file, table.filter(keep))


def newest_rows(table: pa.Table, timestamp: str, share: float) -> pa.Table:
    """The newest `share` of the rows by `timestamp` (at least one), oldest first."""
    count = max(1, math.ceil(table.num_rows * share))
    # Rows without a time count as the oldest.
    times = pc.fill_null(pc.cast(table[timestamp], _TIMESTAMP, safe=False), 0)
    order = np.argsort(times.to_numpy(), kind="stable")
    return table.take(pa.array(order[table.num_rows - count :]))


def replay_rows(
    home: Path, spec: ModelSpec, start: datetime, end: datetime, schema: pa.Schema
) -> pa.Table:
    """Captured live requests labelled in [start, end), as rows of the production schema (the
    capture's `captured_at` as the timestamp): what both models are replayed on."""
    # Imported here: the capture layout imports this module (resolve_uri).
    from activities.drift.performance_window import read_labelled_requests
    from activities.local.capture import CAPTURED_AT

    policy = spec.loop.window
    captured = read_labelled_requests(
        resolve_uri(home, spec.data.capture_location),
        spec.feature_names,
        start,
        end,
        label=spec.label,
        max_rows=policy.replay_max_rows,
    )
    captured = captured.rename_columns(
        [
            spec.data.timestamp_column if name == CAPTURED_AT else name
            for name in captured.column_names
        ]
    )
    columns = [name for name in schema.names if name in captured.column_names]
    try:
        return captured.select(columns).cast(pa.schema([schema.field(name) for name in columns]))
    except (pa.ArrowException, ValueError):
        # Labels that are not whole numbers where training labels are integers (or features
        # captured with other types): replayed as captured, the evaluation reads them so.
        return captured.select(columns)


def select_data_window(home: Path, request: DataWindowRequest) -> DataWindow:
    """Select, validate and (when sufficient) split and mix the loop's data window."""
    spec = request.spec
    policy = spec.loop.window
    start, end = window_bounds(request.as_of, policy.days)
    regime = regime_in_window(request.regime_start, request.as_of, policy.days)
    if regime is not None:
        start = regime.date()
    query, paths = list_window(home, spec, start, end, request.extra_uris)
    reads = [read_parquet(path) for path in paths]
    if regime is not None:
        timestamp = spec.data.timestamp_column
        reads = [since_regime(read, timestamp, regime) for read in reads]
        query += f" AND {timestamp} >= {regime.isoformat()} (since the regime change)"

    labelled_dir = resolve_uri(home, spec.data.labelled)
    empty_reason = ""
    if not reads:
        empty_reason = (
            f"labelled directory {labelled_dir} does not exist"
            if not labelled_dir.is_dir()
            else f"no partitions under {labelled_dir} for {start}..{end}"
        )
    problems = schema_problems(spec, reads)
    coverage = measure_coverage(spec, reads, start, end)
    checks = coverage_checks(spec, len(reads), problems, coverage, start, end, empty_reason)
    window = DataWindow(
        query=query,
        files=[r.file for r in reads],
        start=start,
        end=end,
        rows=coverage.rows,
        labelled_rows=coverage.labelled_rows,
        days_present=len(coverage.days),
        days_expected=(end - start).days + 1,
        class_counts=coverage.class_counts,
        checks=checks,
        sufficient=all(check.passed for check in checks),
        regime_start=regime,
    )
    if not window.sufficient:
        return window

    production = labelled_rows(combine_production(spec, reads), spec.label)
    baseline_read, production, baseline = align_baseline(home, spec, production)
    ratio = policy.regime_baseline_share if regime is not None else None
    mix = mix_datasets(production, baseline, policy, baseline_ratio=ratio)
    out = loop_data_dir(home, spec.name, request.loop_id)
    notes: list[str] = []
    recent = None
    if mix.holdout.num_rows:
        newest = newest_rows(mix.holdout, spec.data.timestamp_column, policy.recent_share)
        recent = write_parquet_atomic(newest, out / "recent.parquet")
    replay = None
    if policy.replay_days > 0:
        since = request.as_of - timedelta(days=policy.replay_days)
        if regime is not None:
            since = max(since, regime)
        replayed = replay_rows(home, spec, since, request.as_of, production.schema)
        replayed = (
            labelled_rows(replayed, spec.label) if spec.label in replayed.column_names else replayed
        )
        if replayed.num_rows >= policy.replay_min_rows:
            replay = write_parquet_atomic(replayed, out / "replay.parquet")
        elif replayed.num_rows:
            notes.append(
                f"{replayed.num_rows} labelled live requests since {since.isoformat()}: fewer "
                f"than replay_min_rows ({policy.replay_min_rows}), not replayed"
            )
    if regime is not None:
        notes.append(
            f"regime change at {regime.isoformat()}: {production.num_rows} labelled rows since; "
            f"baseline rows {mix.baseline_rows} ({policy.regime_baseline_share:.0%} floor)"
        )
    # model_copy does not re-validate: every value below is already a contract object.
    return window.model_copy(
        update={
            "training_set": write_parquet_atomic(mix.training, out / "training.parquet"),
            "holdout_set": write_parquet_atomic(mix.holdout, out / "holdout.parquet"),
            "baseline_eval_set": write_parquet_atomic(
                mix.baseline_eval, out / "baseline_eval.parquet"
            ),
            "baseline": baseline_read.file,
            "production_rows_in_training": mix.production_rows,
            "baseline_rows_in_training": mix.baseline_rows,
            "recent_set": recent,
            "replay_set": replay,
            "notes": notes,
        }
    )


class DataWindowActivities:
    def __init__(self, home: Path, mirror: DataMirror | None = None) -> None:
        self.home = home
        # Cloud models' data (s3://, gs://) are read from mirrored copies.
        self.mirror = mirror

    @activity.defn(name=ActivityName.SELECT_DATA_WINDOW)
    def select(self, request: DataWindowRequest) -> DataWindow:
        if self.mirror is None:
            window = select_data_window(self.home, request)
        else:
            window = self._select_mirrored(self.mirror, request)
        failed = [check.name for check in window.checks if not check.passed]
        activity.logger.info(
            "data window %s..%s: %d files, %d labelled rows, sufficient=%s%s",
            window.start,
            window.end,
            len(window.files),
            window.labelled_rows,
            window.sufficient,
            f" (failed: {', '.join(failed)})" if failed else "",
        )
        record_newest_data(request.spec.name, [f.day for f in window.files if f.day])
        return window

    def _select_mirrored(self, mirror: DataMirror, request: DataWindowRequest) -> DataWindow:
        try:
            spec, extras = mirror.localize(
                request.spec,
                window=window_bounds(request.as_of, request.spec.loop.window.days),
                extra_uris=request.extra_uris,
                fields=("labelled", "baseline_holdout"),
            )
        except FileNotFoundError as missing:
            raise invalid_data(str(missing)) from None
        if spec is request.spec:
            return select_data_window(self.home, request)
        local = request.model_copy(update={"spec": spec, "extra_uris": extras})
        window = select_data_window(self.home, local)
        # The record names what the store holds, not the mirror's paths.
        home = self.home
        return window.model_copy(
            update={
                "query": remote_text(home, window.query),
                "files": [_remote_file(home, f) for f in window.files],
                "baseline": window.baseline and _remote_file(home, window.baseline),
            }
        )


def record_newest_data(model: str, days: Iterable[date]) -> None:
    """The newest partition seen, as the moment its day ended (UTC): the data reaches that far."""
    newest = max(days, default=None)
    if newest is not None:
        ends = datetime.combine(newest + timedelta(days=1), time(), tzinfo=UTC)
        labels = {"model": model}
        metrics.set_gauge(metrics.activity_meter(), metrics.DATA_NEWEST, labels, ends.timestamp())


def _remote_file(home: Path, file: DatasetFile) -> DatasetFile:
    return file.model_copy(
        update={"uri": remote_uri(home, file.uri), "etag": mirrored_etag(Path(file.uri))}
    )
