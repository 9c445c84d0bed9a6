"""The registered model specs: `<home>/models/<name>.json`, validated on the way in.

`retrain models validate|register` read a TOML or JSON file; loops load the registered copy
through the `load_model_spec` activity, so every loop runs under one recorded spec version.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows.common.errors import ErrorType
from workflows.common.messages import check_value
from workflows.common.models import describe_validation_error
from workflows.common.names import ActivityName, validate_model_name
from workflows.spec.models import ModelSpec


class SpecError(ValueError):
    """A spec file that cannot be read or does not validate; the message lists every problem."""


def read_spec_file(path: Path) -> ModelSpec:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SpecError(f"cannot read {path}: {err.strerror}") from None
    kind = path.suffix.lstrip(".").upper() or "JSON"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(
            f"{path} is not UTF-8 text (byte {err.start}: {data[err.start : err.start + 1]!r}); "
            "save it as UTF-8"
        ) from None
    try:
        raw: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        check_value(raw, str(path))
    except RecursionError:
        raise SpecError(f"{path} is not valid {kind}: nested too deeply") from None
    except (tomllib.TOMLDecodeError, ValueError) as err:
        # JSONDecodeError, an integer beyond Python's digit limit, our depth/surrogate checks
        raise SpecError(f"{path} is not valid {kind}: {err}") from None
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(f"{path}: {describe_validation_error(err)}") from None


class SpecStore:
    def __init__(self, home: Path) -> None:
        self.directory = home / "models"

    def path(self, model: str) -> Path:
        return self.directory / f"{validate_model_name(model)}.json"

    def register(self, spec: ModelSpec) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(spec.name)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            handle.write(spec.model_dump_json(indent=2))
        os.replace(tmp, target)
        return target

    def get(self, model: str) -> ModelSpec | None:
        path = self.path(model)
        if not path.exists():
            return None
        return read_spec_file(path)

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json"))


class ModelSpecActivities:
    def __init__(self, store: SpecStore) -> None:
        self.store = store

    @activity.defn(name=ActivityName.LOAD_MODEL_SPEC)
    def load(self, model: str) -> ModelSpec:
        try:
            spec = self.store.get(model)
        except SpecError as err:
            raise ApplicationError(
                str(err), type=ErrorType.INVALID_MODEL_SPEC, non_retryable=True
            ) from None
        if spec is None:
            raise ApplicationError(
                f"model {model!r} has no registered spec: run `retrain models register FILE`",
                type=ErrorType.UNKNOWN_MODEL,
                non_retryable=True,
            )
        return spec
