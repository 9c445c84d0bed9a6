"""Reference profiles: what "normal" looks like for the champion, computed once and stored.

A profile describes the data the current champion learned from: its training set
(`runs/<model>/<loop_id>/data/training.parquet`, production mixed with the baseline), or the
spec's baseline holdout when the champion has no loop (or there is no champion yet). It holds
each column's sorted finite values, quantile bins and category tables (see
`activities.drift.statistics`) for the features, the champion's predictions on that data, and
the labels, so a check costs about one pass over the current window.

Profiles are immutable and keyed by the champion version plus a digest of what shapes them
(feature names and kinds, label, bins, source file): a promotion or a spec change selects a new
key and the profile is built on first use, so no check ever compares against a stale champion.
Layout: `<home>/drift/<model>/profiles/<key>/{manifest.json, features.npz, prediction.npz,
label.npz}`, written to a hidden directory and renamed into place whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from pydantic import AwareDatetime

from activities.drift.statistics import (
    CategoricalReference,
    NumericReference,
    build_categorical_reference,
    build_numeric_reference,
    load_references,
    save_references,
)
from activities.loop.data_window import loop_data_dir, resolve_uri
from activities.training_runner import sha256_file
from workflows.common.models import StrictModel
from workflows.drift.models import ColumnKind
from workflows.loop.models import ModelVersion
from workflows.spec.models import FeatureKind, ModelSpec, Task

PROFILE_FORMAT = 1
FloatArray = npt.NDArray[np.float64]
ObjectArray = npt.NDArray[np.object_]


class ProfileError(ValueError):
    """The reference data cannot give a profile (unreadable, no rows)."""


class ProfiledColumn(StrictModel):
    name: str
    kind: ColumnKind
    # The Arrow type the reference stores (features): captured data must match it.
    arrow_type: str


class ProfileManifest(StrictModel):
    format: int = PROFILE_FORMAT
    model: str
    key: str
    version: str | None
    source: str
    source_sha256: str
    built_at: AwareDatetime
    rows: int
    bins: int
    features: list[ProfiledColumn]
    # Spec features the reference data lacks: reported as data-quality problems by every check.
    missing_features: list[str] = []
    # What the champion's predictions are compared on: the positive-class probability
    # (`score`), the predicted value or class (`prediction`), or nothing (no champion).
    prediction_column: str | None = None
    prediction_kind: ColumnKind | None = None
    label_kind: ColumnKind
    notes: list[str] = []


@dataclass(frozen=True)
class RoleReferences:
    numeric: NumericReference
    categorical: CategoricalReference


@dataclass(frozen=True)
class Profile:
    manifest: ProfileManifest
    directory: Path
    features: RoleReferences
    prediction: RoleReferences
    label: RoleReferences


def profiles_dir(home: Path, model: str) -> Path:
    return home / "drift" / model / "profiles"


def reference_source(home: Path, spec: ModelSpec, champion: ModelVersion | None) -> Path:
    """The champion's training set when it came from a loop, else the baseline holdout."""
    if champion is not None and champion.loop_id:
        training = loop_data_dir(home, spec.name, champion.loop_id) / "training.parquet"
        if training.exists():
            return training
    return resolve_uri(home, spec.data.baseline_holdout)


def profile_key(spec: ModelSpec, champion: ModelVersion | None, source: Path) -> str:
    shape = {
        "features": [[f.name, f.kind.value] for f in spec.features],
        "label": spec.label,
        "task": spec.task.value,
        "bins": spec.drift.bins,
        "source": str(source),
        "format": PROFILE_FORMAT,
    }
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:12]
    return f"{'v' + champion.version if champion else 'baseline'}-{digest}"


def label_kind(spec: ModelSpec) -> ColumnKind:
    return ColumnKind.CATEGORICAL if spec.task is Task.CLASSIFICATION else ColumnKind.NUMERIC


def class_text(values: FloatArray) -> ObjectArray:
    """Classes as text, the same on both sides: 1, 1.0 and "1" all read as "1"; NaN -> None."""
    out = np.empty(len(values), dtype=object)
    finite = np.isfinite(values)
    integral = finite & (values == np.floor(np.where(finite, values, 0.0)))
    out[integral] = values[integral].astype(np.int64).astype(str)
    other = finite & ~integral
    out[other] = values[other].astype(str)
    out[~finite] = None
    return out


def as_float(column: pa.ChunkedArray | pa.Array) -> FloatArray:
    """A numeric Arrow column as float64 with NaN for nulls."""
    cast = pc.cast(column, pa.float64())
    return np.asarray(pc.fill_null(cast, np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)


def as_text(column: pa.ChunkedArray | pa.Array) -> ObjectArray:
    values = pc.cast(column, pa.string()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=object)


def label_values(column: pa.ChunkedArray | pa.Array, kind: ColumnKind) -> Any:
    if kind is ColumnKind.NUMERIC:
        return as_float(column)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return class_text(as_float(column))
    return as_text(column)


def is_numeric_type(arrow_type: pa.DataType | None) -> bool:
    return arrow_type is not None and bool(
        pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
    )


def compatible(reference_type: str, captured: pa.DataType, kind: ColumnKind) -> bool:
    """Numbers stay numbers (int64 vs double is fine); anything else must keep its type."""
    if kind is ColumnKind.NUMERIC or is_numeric_type(captured):
        return is_numeric_type(captured) and (
            kind is ColumnKind.NUMERIC or is_numeric_type(_parsed(reference_type))
        )
    return str(captured) == reference_type


def _parsed(type_name: str) -> pa.DataType | None:
    try:
        return pa.type_for_alias(type_name)
    except ValueError:  # not a simple type (lists, timestamps with zones): never numeric
        return None


def _empty_role() -> RoleReferences:
    return RoleReferences(
        numeric=build_numeric_reference([], np.empty((0, 0))),
        categorical=build_categorical_reference([], []),
    )


def _role(
    numeric: dict[str, Any], categorical: dict[str, Any], rows: int, bins: int
) -> RoleReferences:
    matrix = np.column_stack(list(numeric.values())) if numeric else np.empty((rows, 0), np.float64)
    return RoleReferences(
        numeric=build_numeric_reference(list(numeric), matrix, bins=bins),
        categorical=build_categorical_reference(list(categorical), list(categorical.values())),
    )


def _predictions(
    estimator: Any, frame: Any, spec: ModelSpec
) -> tuple[str, ColumnKind, FloatArray | ObjectArray]:
    """The champion's outputs on the reference, as the endpoint captures them."""
    classes = getattr(estimator, "classes_", None)
    if spec.task is Task.CLASSIFICATION and classes is not None:
        if len(classes) == 2 and callable(getattr(estimator, "predict_proba", None)):
            scores = np.asarray(estimator.predict_proba(frame)[:, 1], dtype=np.float64)
            return "score", ColumnKind.NUMERIC, scores
        predicted = np.asarray(estimator.predict(frame), dtype=np.float64)
        return "prediction", ColumnKind.CATEGORICAL, class_text(predicted)
    return "prediction", ColumnKind.NUMERIC, np.asarray(estimator.predict(frame), np.float64)


def build_profile(
    home: Path,
    spec: ModelSpec,
    champion: ModelVersion | None,
    load_model: Any,
    now: datetime | None = None,
) -> Profile:
    """Build (or reuse) the profile for this champion and spec. `load_model(version)` returns
    the champion's estimator (the registry's `load`)."""
    source = reference_source(home, spec, champion)
    key = profile_key(spec, champion, source)
    directory = profiles_dir(home, spec.name) / key
    if (directory / "manifest.json").exists():
        return load_profile(directory)

    try:
        parquet = pq.ParquetFile(source)
        names = parquet.schema_arrow.names
        wanted = [f.name for f in spec.features if f.name in names]
        table = parquet.read(columns=wanted + ([spec.label] if spec.label in names else []))
    except (OSError, pa.ArrowException) as error:
        raise ProfileError(f"cannot read the reference data {source}: {error}") from error
    if table.num_rows == 0:
        raise ProfileError(f"the reference data {source} has no rows")

    notes: list[str] = []
    columns: list[ProfiledColumn] = []
    numeric: dict[str, FloatArray] = {}
    categorical: dict[str, ObjectArray] = {}
    for feature in spec.features:
        if feature.name not in names:
            continue
        column = table.column(feature.name)
        kind = ColumnKind(feature.kind.value)
        if feature.kind is FeatureKind.NUMERIC:
            if not is_numeric_type(column.type):
                notes.append(f"{feature.name}: numeric in the spec, {column.type} in {source}")
                continue
            numeric[feature.name] = as_float(column)
        else:
            categorical[feature.name] = as_text(column)
        columns.append(ProfiledColumn(name=feature.name, kind=kind, arrow_type=str(column.type)))
    missing = [f.name for f in spec.features if f.name not in {c.name for c in columns}]
    features = _role(numeric, categorical, table.num_rows, spec.drift.bins)

    kind_of_label = label_kind(spec)
    if spec.label in names:
        labels = label_values(table.column(spec.label), kind_of_label)
        label = (
            _role({spec.label: labels}, {}, table.num_rows, spec.drift.bins)
            if kind_of_label is ColumnKind.NUMERIC
            else _role({}, {spec.label: labels}, table.num_rows, spec.drift.bins)
        )
    else:
        notes.append(f"the reference data has no label column {spec.label!r}")
        label = _empty_role()

    prediction = _empty_role()
    prediction_column: str | None = None
    prediction_kind: ColumnKind | None = None
    if champion is not None and not missing:
        try:
            estimator = load_model(champion)
            frame = table.select(spec.feature_names).to_pandas()
            prediction_column, prediction_kind, outputs = _predictions(estimator, frame, spec)
        except Exception as error:  # the model's own failure: no prediction drift, say why
            notes.append(f"no prediction reference: champion v{champion.version}: {error}")
        else:
            if prediction_kind is ColumnKind.NUMERIC:
                prediction = _role({prediction_column: outputs}, {}, len(outputs), spec.drift.bins)
            else:
                prediction = _role({}, {prediction_column: outputs}, len(outputs), spec.drift.bins)
    elif champion is None:
        notes.append("no champion yet: no prediction reference")
    else:
        notes.append(f"no prediction reference: the reference lacks {', '.join(missing)}")

    manifest = ProfileManifest(
        model=spec.name,
        key=key,
        version=champion.version if champion else None,
        source=str(source),
        source_sha256=sha256_file(source),
        built_at=now or datetime.now(UTC),
        rows=table.num_rows,
        bins=spec.drift.bins,
        features=columns,
        missing_features=missing,
        prediction_column=prediction_column,
        prediction_kind=prediction_kind,
        label_kind=kind_of_label,
        notes=notes,
    )
    _store(directory, manifest, features, prediction, label)
    return load_profile(directory)


def _store(
    directory: Path,
    manifest: ProfileManifest,
    features: RoleReferences,
    prediction: RoleReferences,
    label: RoleReferences,
) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".tmp-{directory.name}-"))
    try:
        for name, role in (("features", features), ("prediction", prediction), ("label", label)):
            save_references(staging / f"{name}.npz", role.numeric, role.categorical)
        (staging / "manifest.json").write_text(manifest.model_dump_json(indent=2))
        try:
            os.rename(staging, directory)
        except OSError:
            # Another worker built the same immutable profile first: theirs is as good.
            if not (directory / "manifest.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_profile(directory: Path) -> Profile:
    manifest = ProfileManifest.model_validate_json((directory / "manifest.json").read_text())
    roles = {}
    for name in ("features", "prediction", "label"):
        numeric, categorical = load_references(directory / f"{name}.npz")
        roles[name] = RoleReferences(numeric=numeric, categorical=categorical)
    return Profile(
        manifest=manifest,
        directory=directory,
        features=roles["features"],
        prediction=roles["prediction"],
        label=roles["label"],
    )
