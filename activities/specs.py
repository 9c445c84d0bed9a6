"""The registered model specs: `<home>/models/<name>.json`, validated on the way in.

`retrain models validate|register` read a YAML, TOML or JSON file (chosen by its suffix, each
with its own parser and that parser's error); loops load the registered copy through the
`load_model_spec` activity, so every loop runs under one recorded spec version.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.files import plain_permissions
from workflows.common.errors import ErrorType
from workflows.common.messages import check_value
from workflows.common.models import validation_problems
from workflows.common.names import ActivityName, validate_model_name
from workflows.spec.models import ModelSpec

# The spec formats by file suffix.
SPEC_FORMATS = {".yaml": "YAML", ".yml": "YAML", ".toml": "TOML", ".json": "JSON"}


class SpecError(ValueError):
    """A spec file that cannot be read or does not validate. `headline` says which file and
    what went wrong; `problems` lists every validation problem (empty for a parse error)."""

    def __init__(self, headline: str, problems: list[str] | None = None) -> None:
        self.headline = headline
        self.problems = list(problems or [])
        super().__init__("; ".join([headline, *self.problems]) if self.problems else headline)


class _StrictYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys: a second `loop:` table would otherwise
    silently replace the first (TOML refuses them too)."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictYamlLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's own message, with the line and column of the problem (1-based)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        context = f" ({err.context})" if err.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {err.problem}{context}"
    return str(err)


def parse_spec_text(text: str, kind: str) -> Any:
    """Parse a spec's text as `kind` (YAML, TOML or JSON); ValueError with the parser's own
    message when it is not valid."""
    try:
        if kind == "YAML":
            return yaml.load(text, Loader=_StrictYamlLoader)
        if kind == "TOML":
            return tomllib.loads(text)
        return json.loads(text)
    except yaml.YAMLError as err:
        raise ValueError(_yaml_problem(err)) from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ValueError(str(err)) from None


def read_spec_file(path: Path) -> ModelSpec:
    kind = SPEC_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise SpecError(
            f"{path}: unknown spec format {path.suffix or '(no suffix)'!r}: "
            "name the file .yaml, .yml, .toml or .json"
        )
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SpecError(f"cannot read {path}: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(
            f"{path} is not UTF-8 text (byte {err.start}: {data[err.start : err.start + 1]!r}); "
            "save it as UTF-8"
        ) from None
    try:
        raw = parse_spec_text(text, kind)
        check_value(raw, str(path))
    except RecursionError:
        raise SpecError(f"{path} is not valid {kind}: nested too deeply") from None
    except ValueError as err:
        raise SpecError(f"{path} is not valid {kind}: {err}") from None
    if not isinstance(raw, dict):
        got = "nothing" if raw is None else f"a {type(raw).__name__}"
        raise SpecError(f"{path}: a spec is a mapping of fields at the top level, got {got}")
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(f"{path}: invalid model spec", validation_problems(err)) from None


class SpecStore:
    def __init__(self, home: Path) -> None:
        self.directory = home / "models"

    def path(self, model: str) -> Path:
        return self.directory / f"{validate_model_name(model)}.json"

    def register(self, spec: ModelSpec) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(spec.name)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        plain_permissions(fd)
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


def registered_spec(store: SpecStore, model: str) -> ModelSpec:
    """The model's registered spec, or the non-retryable error a check refuses it with."""
    try:
        spec = store.get(model)
    except SpecError as error:
        raise ApplicationError(
            str(error), type=ErrorType.INVALID_MODEL_SPEC, non_retryable=True
        ) from error
    if spec is None:
        raise ApplicationError(
            f"no registered model {model!r}", type=ErrorType.UNKNOWN_MODEL, non_retryable=True
        )
    return spec


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
