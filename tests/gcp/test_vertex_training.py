"""Vertex training (CustomJob and PipelineJob) through the GAPIC v1 clients against the fake.

The fake never runs a container: `ContainerEmulator` (tests/support/vertex_harness.py) runs the real
`activities.container_entry` with each job's own arguments against the fake's GCS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped, unused-ignore]
import pytest
from temporalio.exceptions import ApplicationError, CancelledError

from activities.gcp.training import (
    LOOP_KEY,
    VertexTraining,
    label_value,
    loop_key,
    pipeline_job_id,
)
from activities.training_runner import sha256_file
from tests.loop.test_training import DEFAULT, make_job, write_dataset
from tests.support.vertex_fake import jobs, storage
from tests.support.vertex_fake.server import RunningFake
from tests.support.vertex_harness import BUCKET, ContainerEmulator, fake_clients
from workflows.common.errors import ErrorType
from workflows.loop.models import TrainingJob
from workflows.spec.vertex import VertexSettings

LOOP = "retrain-churn-1"
RUN = f"adaptive-retraining/runs/churn/{LOOP}"
PARENT = "projects/retrain-tests/locations/us-central1"


def settings(**overrides: Any) -> VertexSettings:
    values: dict[str, Any] = {
        "project": "retrain-tests",
        "staging_bucket": f"gs://{BUCKET}",
        "training_image": "us-docker.pkg.dev/retrain-tests/images/retrain:1",
        "endpoint_name": "churn",
        "serving_image": "us-docker.pkg.dev/retrain-tests/images/serve:1",
        "service_account": "trainer@retrain-tests.iam.gserviceaccount.com",
        "labels": {"team": "growth"},
    } | overrides
    return VertexSettings.model_validate(values)


def no_heartbeat(progress: str) -> None:
    pass


@pytest.fixture
def job(tmp_path: Path) -> TrainingJob:
    job = make_job(write_dataset(tmp_path / "data"), DEFAULT)
    return job.model_copy(
        update={
            "tags": {"model": "churn", "loop-id": LOOP, "trigger": "drift"},
            "parameters": {"trigger_type": "drift", "event_count": "3", "drift_severity": "high"},
        }
    )


@pytest.fixture
def emulator(vertex: RunningFake) -> ContainerEmulator:
    return ContainerEmulator(vertex.state)


def training(vertex: RunningFake, tmp_path: Path, **overrides: Any) -> VertexTraining:
    return VertexTraining(
        fake_clients(vertex),
        settings(**overrides),
        tmp_path / "home",
        poll_seconds=0.05,
        max_poll_seconds=0.2,
    )


def custom_jobs(vertex: RunningFake) -> list[dict[str, Any]]:
    return list(vertex.state.table(jobs.CUSTOM).values())


def test_custom_job_trains_once_and_a_retry_adopts_it(
    vertex: RunningFake, emulator: ContainerEmulator, job: TrainingJob, tmp_path: Path
) -> None:
    backend = training(vertex, tmp_path)
    progress: list[str] = []
    result = backend.train(job, progress.append)

    assert result.backend == "vertex" and not result.reused
    artifact = Path(result.artifact_path)
    assert artifact.is_relative_to(tmp_path / "home" / "runs" / "churn" / LOOP / "training")
    assert sha256_file(artifact) == result.artifact_sha256
    assert hasattr(joblib.load(artifact), "predict")
    assert set(result.metrics) and any("RUNNING" in line for line in progress)

    [created] = custom_jobs(vertex)
    spec = created["jobSpec"]
    pool = spec["workerPoolSpecs"][0]
    assert pool["machineSpec"]["machineType"] == "n1-standard-4"
    assert pool["containerSpec"]["imageUri"] == settings().training_image
    arguments = pool["containerSpec"]["args"]
    assert arguments[arguments.index("--model-dir") + 1] == f"/gcs/{BUCKET}/{RUN}/output/model"
    assert arguments[arguments.index("--train") + 1].startswith(f"/gcs/{BUCKET}/{RUN}/input/train/")
    assert arguments[arguments.index("--backend") + 1] == "vertex"
    assert spec["serviceAccount"] == settings().service_account
    assert spec["baseOutputDirectory"]["outputUriPrefix"] == f"gs://{BUCKET}/{RUN}/output"
    assert created["labels"] == {
        "team": "growth",
        "model": "churn",
        "loop-id": LOOP,
        "loop_id": LOOP,
        "trigger": "drift",
        LOOP_KEY: loop_key("churn", LOOP),
    }
    # The staged inputs are gone, the model dir stays.
    assert storage.object_names(vertex.state, BUCKET, f"{RUN}/input/") == []
    assert f"{RUN}/output/model/result.json" in storage.object_names(vertex.state, BUCKET, RUN)

    again = backend.train(job, no_heartbeat)
    assert again.reused and again.artifact_sha256 == result.artifact_sha256
    assert len(custom_jobs(vertex)) == 1 and len(emulator.runs) == 1


def test_a_job_started_by_an_earlier_attempt_is_adopted_while_running(
    vertex: RunningFake, emulator: ContainerEmulator, job: TrainingJob, tmp_path: Path
) -> None:
    emulator.gate.clear()
    backend = training(vertex, tmp_path)
    heartbeats = 0

    def give_up(progress: str) -> None:
        nonlocal heartbeats
        heartbeats += 1
        if heartbeats == 2:
            raise TimeoutError("worker lost")  # the first attempt dies while the job runs

    with pytest.raises(TimeoutError):
        backend.train(job, give_up)
    emulator.gate.set()
    result = backend.train(job, no_heartbeat)
    assert result.reused and len(custom_jobs(vertex)) == 1 and len(emulator.runs) == 1


def test_failed_job_is_non_retryable_with_the_entrypoints_error(
    vertex: RunningFake, emulator: ContainerEmulator, job: TrainingJob, tmp_path: Path
) -> None:
    failing = job.model_copy(update={"entrypoint": "tests.support.training_entrypoints:failing"})
    with pytest.raises(ApplicationError) as raised:
        training(vertex, tmp_path).train(failing, no_heartbeat)
    assert raised.value.type == ErrorType.TRAINING_ENTRYPOINT and raised.value.non_retryable
    assert "label column 'label' is all null" in str(raised.value)
    [created] = custom_jobs(vertex)
    assert created["state"] == "JOB_STATE_FAILED"


def test_failed_job_without_a_failure_file_reports_vertexs_message(
    vertex: RunningFake, job: TrainingJob, tmp_path: Path
) -> None:
    vertex.state.hooks["run_custom_job"] = lambda _: "Out of memory: replica workerpool0-0"
    with pytest.raises(ApplicationError) as raised:
        training(vertex, tmp_path).train(job, no_heartbeat)
    assert raised.value.type == ErrorType.TRAINING_ENTRYPOINT
    assert "Out of memory: replica workerpool0-0" in str(raised.value)


def test_throttled_create_is_retryable_and_the_retry_trains_once(
    vertex: RunningFake, emulator: ContainerEmulator, job: TrainingJob, tmp_path: Path
) -> None:
    vertex.state.faults.append((f"POST /v1/{PARENT}/customJobs", 429, "Quota exceeded"))
    backend = training(vertex, tmp_path)
    with pytest.raises(ApplicationError) as raised:
        backend.train(job, no_heartbeat)
    assert raised.value.type == ErrorType.GCP_UNAVAILABLE and not raised.value.non_retryable
    assert custom_jobs(vertex) == []
    assert not backend.train(job, no_heartbeat).reused
    assert len(emulator.runs) == 1


def test_permission_denied_is_not_retryable_and_keeps_googles_message(
    vertex: RunningFake, job: TrainingJob, tmp_path: Path
) -> None:
    message = "Permission 'aiplatform.customJobs.list' denied on resource"
    vertex.state.faults.append((f"GET /v1/{PARENT}/customJobs", 403, message))
    with pytest.raises(ApplicationError) as raised:
        training(vertex, tmp_path).train(job, no_heartbeat)
    assert raised.value.type == ErrorType.GCP_REQUEST_REJECTED and raised.value.non_retryable
    assert message in str(raised.value)


def test_cancelling_the_activity_cancels_the_job(
    vertex: RunningFake, emulator: ContainerEmulator, job: TrainingJob, tmp_path: Path
) -> None:
    emulator.gate.clear()

    def cancelled(progress: str) -> None:
        raise CancelledError("training cancelled")

    try:
        with pytest.raises(CancelledError):
            training(vertex, tmp_path).train(job, cancelled)
        [created] = custom_jobs(vertex)
        assert created["state"] == "JOB_STATE_CANCELLED"
    finally:
        emulator.gate.set()


def test_labels_follow_gcp_rules() -> None:
    assert label_value("Retrain_Churn.2026-01-01 10:00") == "retrain_churn-2026-01-01-10-00"
    assert len(label_value("x" * 200)) == 63
    assert pipeline_job_id("churn", "Retrain.Churn_1") == pipeline_job_id(
        "churn", "Retrain.Churn_1"
    )
    assert pipeline_job_id("churn", "retrain.churn-1") != pipeline_job_id(
        "churn", "retrain-churn-1"
    )


PIPELINE_PARAMETERS = (
    "trigger_type",
    "trigger_reason",
    "event_count",
    "drift_severity",
    "train_path",
    "validation_path",
    "job_config_path",
    "model_output_path",
)


def pipeline_spec() -> dict[str, Any]:
    """A compiled KFP v2 pipeline spec declaring our pipeline contract's parameters."""
    return {
        "pipelineInfo": {"name": "churn-training"},
        "schemaVersion": "2.1.0",
        "sdkVersion": "kfp-2.7.0",
        "root": {
            "inputDefinitions": {
                "parameters": {name: {"parameterType": "STRING"} for name in PIPELINE_PARAMETERS}
            },
            "dag": {"tasks": {}},
        },
        "components": {},
        "deploymentSpec": {"executors": {}},
    }


def pipeline_training(vertex: RunningFake, tmp_path: Path) -> VertexTraining:
    """The backend in pipeline mode, its compiled template on the fake's Cloud Storage."""
    template = "adaptive-retraining/templates/churn-training.json"
    storage.put_object(vertex.state, BUCKET, template, json.dumps(pipeline_spec()).encode())
    return training(vertex, tmp_path, pipeline_template=f"gs://{BUCKET}/{template}")


def test_pipeline_mode_submits_once_with_our_parameters(
    vertex: RunningFake, emulator: ContainerEmulator, job: TrainingJob, tmp_path: Path
) -> None:
    backend = pipeline_training(vertex, tmp_path)

    result = backend.train(job, no_heartbeat)
    assert not result.reused and sha256_file(Path(result.artifact_path)) == result.artifact_sha256

    [created] = vertex.state.table(jobs.PIPELINE).values()
    assert created["name"] == f"{PARENT}/pipelineJobs/{pipeline_job_id('churn', LOOP)}"
    config = created["runtimeConfig"]
    assert config["gcsOutputDirectory"] == f"gs://{BUCKET}/{RUN}/output/pipeline"
    values = config["parameterValues"]
    assert values["trigger_type"] == "drift" and values["event_count"] == "3"
    assert values["drift_severity"] == "high" and values["trigger_reason"] == "none"
    assert values["model_output_path"] == f"gs://{BUCKET}/{RUN}/output/model"
    assert values["job_config_path"] == f"gs://{BUCKET}/{RUN}/input/config/job.json"
    assert created["labels"]["trigger"] == "drift" and created["labels"]["team"] == "growth"
    assert created["serviceAccount"] == settings().service_account

    again = backend.train(job, no_heartbeat)
    assert again.reused and len(vertex.state.table(jobs.PIPELINE)) == 1
    assert len(emulator.runs) == 1


def test_a_pipeline_submitted_concurrently_by_another_attempt_is_waited_for(
    vertex: RunningFake, emulator: ContainerEmulator, job: TrainingJob, tmp_path: Path
) -> None:
    backend = pipeline_training(vertex, tmp_path)
    first = backend.train(job, no_heartbeat)

    # The other attempt's job is not there yet when this one looks, but is when it submits
    # (Vertex answers 409 ALREADY_EXISTS, which google-api-core raises as Conflict over REST).
    name = f"{PARENT}/pipelineJobs/{pipeline_job_id('churn', LOOP)}"
    vertex.state.faults.append((f"GET /v1/{name}", 404, f"{name} not found"))
    again = backend.train(job, no_heartbeat)
    assert again.artifact_sha256 == first.artifact_sha256
    assert len(vertex.state.table(jobs.PIPELINE)) == 1 and len(emulator.runs) == 1
