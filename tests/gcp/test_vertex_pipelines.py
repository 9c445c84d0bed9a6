"""The PipelineJob built from a compiled KFP template (activities/gcp/pipelines.py) is the one
the aiplatform SDK's `PipelineJob(...)` and `submit(service_account=...)` build, for every
template shape: a PipelineSpec of schema 2.1.0 (plain parameter values) or 2.0.0 (typed values),
and a PipelineJob in YAML carrying its own default values and failure policy."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform_v1
from temporalio.exceptions import ApplicationError

from activities.gcp.pipelines import load_template, pipeline_job
from workflows.common.errors import ErrorType

ROOT = "gs://retrain-staging/adaptive-retraining/runs/churn/l-1/output/pipeline"
PARAMETERS = {"trigger_type": "drift", "train_path": "gs://retrain-staging/train.parquet"}
LABELS = {"model": "churn", "team": "growth"}
ACCOUNT = "trainer@retrain-tests.iam.gserviceaccount.com"


def spec(schema: str, parameters: dict[str, str]) -> dict[str, Any]:
    key = "parameterType" if schema >= "2.1.0" else "type"
    return {
        "pipelineInfo": {"name": "churn-training"},
        "schemaVersion": schema,
        "sdkVersion": "kfp-2.7.0",
        "root": {
            "inputDefinitions": {
                "parameters": {name: {key: kind} for name, kind in parameters.items()}
            },
            "dag": {"tasks": {}},
        },
        "components": {},
        "deploymentSpec": {"executors": {}},
    }


STRINGS = {"trigger_type": "STRING", "train_path": "STRING"}
TEMPLATES: dict[str, tuple[str, Any]] = {
    "spec-2.1.0.json": ("json", spec("2.1.0", STRINGS)),
    "spec-2.0.0.json": ("json", spec("2.0.0", STRINGS | {"epochs": "INT", "rate": "DOUBLE"})),
    "job.yaml": (
        "yaml",
        {
            "pipelineSpec": spec("2.1.0", STRINGS | {"epochs": "NUMBER_INTEGER"}),
            "runtimeConfig": {
                "parameterValues": {"epochs": 3, "trigger_type": "manual"},
                "failurePolicy": "PIPELINE_FAILURE_POLICY_FAIL_FAST",
            },
        },
    ),
    "legacy-job.json": (
        "json",
        {
            "pipelineSpec": spec("2.0.0", STRINGS | {"epochs": "INT", "rate": "DOUBLE"}),
            "runtimeConfig": {
                "parameters": {"epochs": {"intValue": "5"}, "rate": {"doubleValue": 0.5}}
            },
        },
    ),
}


def write(tmp_path: Path, name: str) -> Path:
    kind, content = TEMPLATES[name]
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content) if kind == "yaml" else json.dumps(content))
    return path


def ours(template: Path) -> aiplatform_v1.PipelineJob:
    return pipeline_job(
        load_template(template),
        display_name="churn-l-1",
        pipeline_root=ROOT,
        parameters=PARAMETERS,
        labels=LABELS,
        service_account=ACCOUNT,
    )


def the_sdks(template: Path) -> aiplatform_v1.PipelineJob:
    """What the SDK would send: its PipelineJob, with what `submit` adds (the account)."""
    aiplatform = importlib.import_module("google.cloud.aiplatform")  # not analysed by mypy
    job = aiplatform.PipelineJob(
        display_name="churn-l-1",
        template_path=str(template),
        job_id="retrain-churn-l-1",
        pipeline_root=ROOT,
        parameter_values=PARAMETERS,
        labels=LABELS,
        project="retrain-tests",
        location="us-central1",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
    )
    sent = job._gca_resource
    sent.service_account = ACCOUNT
    rebuilt: aiplatform_v1.PipelineJob = aiplatform_v1.PipelineJob.deserialize(
        type(sent).serialize(sent)
    )
    return rebuilt


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_the_job_is_the_one_the_sdk_builds(tmp_path: Path, name: str) -> None:
    template = write(tmp_path, name)
    built = ours(template)
    assert aiplatform_v1.PipelineJob.to_dict(built) == aiplatform_v1.PipelineJob.to_dict(
        the_sdks(template)
    )


def test_parameters_are_plain_after_schema_2_0_0_and_typed_up_to_it(tmp_path: Path) -> None:
    plain = ours(write(tmp_path, "spec-2.1.0.json")).runtime_config
    assert plain.gcs_output_directory == ROOT
    assert dict(plain.parameter_values) == PARAMETERS and not plain.parameters

    typed = ours(write(tmp_path, "legacy-job.json")).runtime_config
    assert not typed.parameter_values
    values = {name: type(value).to_dict(value) for name, value in typed.parameters.items()}
    assert values["trigger_type"]["string_value"] == "drift"
    assert values["epochs"]["int_value"] == "5" and values["rate"]["double_value"] == 0.5


def test_a_template_not_declaring_a_parameter_is_refused_for_good(tmp_path: Path) -> None:
    template = load_template(write(tmp_path, "spec-2.1.0.json"))
    with pytest.raises(ApplicationError, match="does not declare the parameters drift_severity"):
        pipeline_job(
            template,
            display_name="churn-l-1",
            pipeline_root=ROOT,
            parameters=PARAMETERS | {"drift_severity": "high"},
            labels=LABELS,
            service_account=None,
        )


def test_a_file_that_is_no_pipeline_spec_is_refused_for_good(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ApplicationError) as raised:
        load_template(path)
    assert raised.value.type == ErrorType.INVALID_TRAINING_JOB and raised.value.non_retryable


@pytest.mark.parametrize(
    "text", ["{not: [closed", '{"schemaVersion": "2.1.0"}', '{"root": {}, "deploymentSpec": {}}']
)
def test_a_malformed_template_is_refused_for_good(tmp_path: Path, text: str) -> None:
    path = tmp_path / "template.json"
    path.write_text(text)
    with pytest.raises(ApplicationError) as raised:
        ours(path)
    assert raised.value.type == ErrorType.INVALID_TRAINING_JOB and raised.value.non_retryable
