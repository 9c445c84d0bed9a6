"""A Vertex PipelineJob from a compiled KFP template, built as the aiplatform SDK's `PipelineJob`
builds it (its pipeline_jobs.py and utils/pipeline_utils.py), without loading that SDK.

The template (JSON or YAML) is a PipelineSpec, or a PipelineJob holding one under `pipelineSpec`
whose `runtimeConfig` gives default parameter values and a failure policy. The job's runtime
config has the pipeline root as `gcsOutputDirectory` and the parameter values: plain, under
`parameterValues`, for schema versions after 2.0.0; typed (`stringValue`, `intValue`,
`doubleValue`, by the declared type), under `parameters`, up to 2.0.0. Every value must be a
parameter the pipeline declares: a template that does not is refused for good.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import google.cloud.aiplatform_v1 as aiplatform_v1
import yaml
from temporalio.exceptions import ApplicationError

from workflows.common.errors import ErrorType

# The last schema version whose runtime parameters are typed `Value`s (KFP v1 and early v2).
_LAST_TYPED_SCHEMA = (2, 0, 0)
_TYPED_KEYS = {"INT": "intValue", "DOUBLE": "doubleValue", "STRING": "stringValue"}


def load_template(path: Path) -> dict[str, Any]:
    """A compiled pipeline file: YAML is a superset of JSON, so one loader reads both."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise _refused(f"{path.name} is neither JSON nor YAML: {error}") from None
    if not isinstance(loaded, dict):
        raise _refused(f"{path.name} is not a compiled pipeline spec")
    return loaded


def pipeline_job(
    template: Mapping[str, Any],
    *,
    display_name: str,
    pipeline_root: str,
    parameters: Mapping[str, str],
    labels: Mapping[str, str],
    service_account: str | None,
) -> aiplatform_v1.PipelineJob:
    """The PipelineJob to create from `template` (its id goes with the create request)."""
    if template.get("pipelineSpec") is not None:
        spec, defaults = template["pipelineSpec"], template.get("runtimeConfig") or {}
    else:
        spec, defaults = template, {}
    try:
        declared = {
            name: definition.get("parameterType") or definition.get("type")
            for name, definition in spec["root"]
            .get("inputDefinitions", {})
            .get("parameters", {})
            .items()
        }
        schema = _schema(str(spec["schemaVersion"]))
    except (KeyError, TypeError, AttributeError) as error:
        raise _refused(f"not a compiled pipeline spec (no valid {error})") from None
    given = {**_default_values(defaults), **parameters}
    values = {name: value for name, value in given.items() if value is not None}
    undeclared = sorted(set(values) - set(declared))
    if undeclared:
        raise _refused(f"the pipeline does not declare the parameters {', '.join(undeclared)}")
    runtime: dict[str, Any] = {"gcsOutputDirectory": pipeline_root}
    if schema <= _LAST_TYPED_SCHEMA:
        runtime["parameters"] = {
            name: _typed(name, declared[name], value) for name, value in values.items()
        }
    else:
        runtime["parameterValues"] = values
    if defaults.get("failurePolicy"):
        runtime["failurePolicy"] = defaults["failurePolicy"]
    return aiplatform_v1.PipelineJob(
        display_name=display_name,
        pipeline_spec=spec,
        labels=dict(labels),
        runtime_config=aiplatform_v1.PipelineJob.RuntimeConfig.from_json(json.dumps(runtime)),
        service_account=service_account,
    )


def _default_values(runtime: Mapping[str, Any]) -> dict[str, Any]:
    """A template's own parameter values, plain (typed ones are unwrapped)."""
    if runtime.get("parameterValues") is not None:
        return dict(runtime["parameterValues"])
    found: dict[str, Any] = {}
    for name, value in (runtime.get("parameters") or {}).items():
        if "intValue" in value:
            found[name] = int(value["intValue"])
        elif "doubleValue" in value:
            found[name] = float(value["doubleValue"])
        elif "stringValue" in value:
            found[name] = value["stringValue"]
        else:
            raise _refused(f"the template's parameter {name} has an unknown type: {value}")
    return found


def _typed(name: str, kind: str | None, value: Any) -> dict[str, Any]:
    key = _TYPED_KEYS.get(kind or "")
    if key is None:
        raise _refused(f"the pipeline's parameter {name} has a type we cannot pass: {kind}")
    return {key: value}


def _schema(version: str) -> tuple[int, ...]:
    """`2.1.0` -> (2, 1, 0): KFP writes plain release numbers."""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _refused(message: str) -> ApplicationError:
    return ApplicationError(
        f"Vertex pipeline template: {message}",
        type=ErrorType.INVALID_TRAINING_JOB,
        non_retryable=True,
    )
