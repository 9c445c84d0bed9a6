"""SageMaker training against moto (server mode), plus the container entry run directly.

moto completes jobs instantly without a container: `tests/support/sagemaker_container.py` runs the
real `activities.container_entry` when a job is created. Paths moto lacks (StopTrainingJob,
StopPipelineExecution, a Failed job, throttling, AccessDenied) use botocore's Stubber.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped, unused-ignore]
import pytest
from botocore.stub import ANY, Stubber
from temporalio.exceptions import ApplicationError, CancelledError

from activities.aws.training import SageMakerTraining, request_token, resource_name
from activities.training_runner import sha256_file
from tests.loop.test_training import DEFAULT, make_job, write_dataset
from tests.support.aws_harness import ACCOUNT, ROLE_ARN, Moto
from tests.support.sagemaker_container import ContainerEmulator
from workflows.common.errors import ErrorType
from workflows.loop.models import TrainingJob
from workflows.spec.sagemaker import SageMakerSettings

BUCKET = "retrain-test"
LOOP = "retrain-churn-1"
PIPELINE = "churn-training"


def settings(**overrides: Any) -> SageMakerSettings:
    values: dict[str, Any] = {
        "region": "us-east-1",
        "role_arn": ROLE_ARN,
        "bucket": BUCKET,
        "training_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/retrain:1",
        "endpoint_name": "churn",
        "inference_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/serve:1",
        "tags": {"team": "growth"},
    } | overrides
    return SageMakerSettings.model_validate(values)


def no_heartbeat(progress: str) -> None:
    pass


@pytest.fixture
def job(tmp_path: Path) -> TrainingJob:
    job = make_job(write_dataset(tmp_path / "data"), DEFAULT)
    return job.model_copy(
        update={
            "tags": {"trigger": "drift"},
            "parameters": {"trigger_type": "drift", "event_count": "3", "drift_severity": "high"},
        }
    )


@pytest.fixture
def backend(moto: Moto, tmp_path: Path) -> tuple[SageMakerTraining, ContainerEmulator]:
    clients = moto.clients()
    clients.s3.create_bucket(Bucket=BUCKET)
    emulator = ContainerEmulator(clients.s3)
    emulator.attach(clients.sagemaker)
    training = SageMakerTraining(
        clients, settings(), tmp_path / "home", poll_seconds=0.01, max_poll_seconds=0.05
    )
    return training, emulator


def keys(training: SageMakerTraining, prefix: str = "") -> list[str]:
    listed = training.clients.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def described_job(status: str, **extra: Any) -> dict[str, Any]:
    name = resource_name(LOOP)
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/x/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": extra.pop("SecondaryStatus", "Training"),
        "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "image"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
    } | extra


# ---- the container entry -------------------------------------------------------------------


def test_container_entry_writes_a_relative_result(tmp_path: Path, job: TrainingJob) -> None:
    job_file = tmp_path / "job.json"
    job_file.write_text(job.model_dump_json())
    model_dir = tmp_path / "model"
    done = subprocess.run(
        [
            sys.executable, "-m", "activities.container_entry", "--job", str(job_file),
            "--train", job.request.train_path, "--validation", job.request.validation_path,
            "--model-dir", str(model_dir), "--backend", "vertex",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads((model_dir / "result.json").read_text())
    assert not Path(result["artifact_path"]).is_absolute()
    assert result["backend"] == "vertex"
    assert result["artifact_sha256"] == sha256_file(model_dir / result["artifact_path"])
    assert result["metrics"]["train_rows"] > 0 and result["metrics"]["validation_rows"] > 0
    assert joblib.load(model_dir / result["artifact_path"]) is not None


def test_container_entry_failure_goes_to_the_failure_file(tmp_path: Path, job: TrainingJob) -> None:
    job_file = tmp_path / "job.json"
    failing = job.model_copy(update={"entrypoint": "tests.support.training_entrypoints:failing"})
    job_file.write_text(failing.model_dump_json())
    failure = tmp_path / "output" / "failure"
    done = subprocess.run(
        [
            sys.executable, "-m", "activities.container_entry", "--job", str(job_file),
            "--train", "a", "--validation", "b", "--model-dir", str(tmp_path / "model"),
            "--failure-file", str(failure),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert failure.read_text().startswith("ValueError: label column 'label' is all null")
    assert len(failure.read_bytes()) <= 1024
    assert not (tmp_path / "model" / "result.json").exists()


# ---- names ---------------------------------------------------------------------------------


def test_resource_names_are_valid_and_distinct() -> None:
    assert resource_name("retrain-churn-1") == "retrain-churn-1"
    long_a, long_b = "retrain-" + "a" * 80 + "-1", "retrain-" + "a" * 80 + "-2"
    for loop_id in (long_a, long_b, "retrain-churn_model.v2-7"):
        name = resource_name(loop_id)
        assert len(name) <= 63
        assert name.replace("-", "").isalnum()
    assert resource_name(long_a) != resource_name(long_b)
    assert resource_name("retrain-churn_1") != resource_name("retrain-churn-1")
    assert 32 <= len(request_token(LOOP, "start")) <= 128


# ---- training jobs on moto -----------------------------------------------------------------


def test_trains_once_and_a_retry_adopts_the_job(
    backend: tuple[SageMakerTraining, ContainerEmulator], job: TrainingJob
) -> None:
    training, emulator = backend
    result = training.train(job, no_heartbeat)
    assert emulator.failures == []
    assert emulator.runs == [resource_name(LOOP)]
    assert result.backend == "sagemaker" and not result.reused
    artifact = Path(result.artifact_path)
    assert artifact.is_relative_to(training.training_dir("churn", LOOP) / "output")
    assert sha256_file(artifact) == result.artifact_sha256
    assert joblib.load(artifact) is not None
    assert result.metrics

    again = training.train(job, no_heartbeat)
    assert again.reused and again.artifact_sha256 == result.artifact_sha256
    assert emulator.runs == [resource_name(LOOP)]
    jobs = training.clients.sagemaker.list_training_jobs()["TrainingJobSummaries"]
    assert len(jobs) == 1


def test_job_is_tagged_configured_and_its_inputs_cleaned_up(
    backend: tuple[SageMakerTraining, ContainerEmulator], job: TrainingJob
) -> None:
    training, _ = backend
    training.train(job, no_heartbeat)
    sagemaker = training.clients.sagemaker
    described = sagemaker.describe_training_job(TrainingJobName=resource_name(LOOP))
    tags = {
        t["Key"]: t["Value"]
        for t in sagemaker.list_tags(ResourceArn=described["TrainingJobArn"])["Tags"]
    }
    assert tags == {"team": "growth", "trigger": "drift", "model": "churn", "loop-id": LOOP}
    spec = described["AlgorithmSpecification"]
    assert spec["ContainerEntrypoint"] == ["python", "-m", "activities.container_entry"]
    assert "--model-dir" in spec["ContainerArguments"]
    assert described["RoleArn"] == ROLE_ARN
    assert described["StoppingCondition"]["MaxRuntimeInSeconds"] == 120
    assert {c["ChannelName"] for c in described["InputDataConfig"]} == {
        "config", "train", "validation"
    }  # fmt: skip
    run = f"adaptive-retraining/runs/churn/{LOOP}"
    assert keys(training, f"{run}/input/") == []
    assert keys(training, f"{run}/output/") == [
        f"{run}/output/{resource_name(LOOP)}/output/model.tar.gz"
    ]


def test_a_failed_job_is_non_retryable_with_its_reason(
    backend: tuple[SageMakerTraining, ContainerEmulator], job: TrainingJob
) -> None:
    training, _ = backend
    reason = "AlgorithmError: ValueError: label column 'label' is all null"
    with Stubber(training.clients.sagemaker) as stub:
        stub.add_response(
            "describe_training_job",
            described_job("Failed", FailureReason=reason, SecondaryStatus="Failed"),
        )
        with pytest.raises(ApplicationError) as raised:
            training.train(job, no_heartbeat)
        stub.assert_no_pending_responses()
    assert raised.value.type == ErrorType.TRAINING_ENTRYPOINT and raised.value.non_retryable
    assert reason in str(raised.value)


def test_a_stopped_job_is_non_retryable(
    backend: tuple[SageMakerTraining, ContainerEmulator], job: TrainingJob
) -> None:
    training, _ = backend
    with Stubber(training.clients.sagemaker) as stub:
        stub.add_response(
            "describe_training_job", described_job("Stopped", SecondaryStatus="Stopped")
        )
        with pytest.raises(ApplicationError) as raised:
            training.train(job, no_heartbeat)
    assert raised.value.type == ErrorType.TRAINING_STOPPED and raised.value.non_retryable


def test_a_job_stopped_at_its_max_runtime_is_a_timeout(
    backend: tuple[SageMakerTraining, ContainerEmulator], job: TrainingJob
) -> None:
    training, _ = backend
    with Stubber(training.clients.sagemaker) as stub:
        stopped = described_job("Stopped", SecondaryStatus="MaxRuntimeExceeded")
        stub.add_response("describe_training_job", stopped)
        with pytest.raises(ApplicationError) as raised:
            training.train(job, no_heartbeat)
    assert raised.value.type == ErrorType.TRAINING_TIMEOUT and raised.value.non_retryable


def test_cancellation_stops_the_training_job(
    backend: tuple[SageMakerTraining, ContainerEmulator], job: TrainingJob
) -> None:
    training, _ = backend
    progress: list[str] = []

    def cancelled(text: str) -> None:
        progress.append(text)
        raise CancelledError("training cancelled")

    with Stubber(training.clients.sagemaker) as stub:
        running = described_job(
            "InProgress",
            SecondaryStatusTransitions=[
                {"Status": "Downloading", "StartTime": datetime(2026, 1, 1, tzinfo=UTC),
                 "StatusMessage": "Downloading input data"}
            ],
        )  # fmt: skip
        stub.add_response("describe_training_job", running)
        stub.add_response("stop_training_job", {}, {"TrainingJobName": resource_name(LOOP)})
        with pytest.raises(CancelledError):
            training.train(job, cancelled)
        stub.assert_no_pending_responses()
    assert "InProgress/Training Downloading input data" in progress[0]


def test_throttling_is_retryable(
    backend: tuple[SageMakerTraining, ContainerEmulator], job: TrainingJob
) -> None:
    training, _ = backend
    with Stubber(training.clients.sagemaker) as stub:
        stub.add_client_error("describe_training_job", "ThrottlingException", "Rate exceeded", 400)
        with pytest.raises(ApplicationError) as raised:
            training.train(job, no_heartbeat)
    assert raised.value.type == ErrorType.AWS_UNAVAILABLE and not raised.value.non_retryable


def test_access_denied_is_non_retryable_with_the_message(
    backend: tuple[SageMakerTraining, ContainerEmulator], job: TrainingJob
) -> None:
    training, _ = backend
    message = f"User is not authorized to perform: iam:PassRole on resource: {ROLE_ARN}"
    with Stubber(training.clients.sagemaker) as stub:
        stub.add_client_error(
            "describe_training_job", "ValidationException", "Requested resource not found.", 400
        )
        stub.add_client_error("create_training_job", "AccessDeniedException", message, 400)
        with pytest.raises(ApplicationError) as raised:
            training.train(job, no_heartbeat)
        stub.assert_no_pending_responses()
    assert raised.value.type == ErrorType.AWS_REQUEST_REJECTED and raised.value.non_retryable
    assert message in str(raised.value)


def test_a_missing_bucket_is_non_retryable(moto: Moto, tmp_path: Path, job: TrainingJob) -> None:
    training = SageMakerTraining(moto.clients(), settings(), tmp_path / "home")
    with pytest.raises(ApplicationError) as raised:
        training.train(job, no_heartbeat)
    assert raised.value.type == ErrorType.AWS_REQUEST_REJECTED and raised.value.non_retryable
    assert "NoSuchBucket" in str(raised.value)


# ---- pipelines -----------------------------------------------------------------------------


def pipeline_training(
    backend: tuple[SageMakerTraining, ContainerEmulator],
) -> SageMakerTraining:
    training, _ = backend
    definition = {"Version": "2020-12-01", "Parameters": [], "Steps": []}
    training.clients.sagemaker.create_pipeline(
        PipelineName=PIPELINE,
        PipelineDefinition=json.dumps(definition),
        RoleArn=ROLE_ARN,
    )
    return SageMakerTraining(
        training.clients, settings(pipeline_name=PIPELINE), training.home, poll_seconds=0.01
    )


def test_pipeline_mode_passes_parameters_and_is_idempotent(
    backend: tuple[SageMakerTraining, ContainerEmulator], job: TrainingJob
) -> None:
    training = pipeline_training(backend)
    emulator = backend[1]
    result = training.train(job, no_heartbeat)
    assert emulator.failures == [] and len(emulator.runs) == 1
    assert not result.reused and sha256_file(Path(result.artifact_path)) == result.artifact_sha256

    sagemaker = training.clients.sagemaker
    executions = sagemaker.list_pipeline_executions(PipelineName=PIPELINE)
    [summary] = executions["PipelineExecutionSummaries"]
    assert summary["PipelineExecutionDisplayName"] == resource_name(LOOP)
    listed = sagemaker.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=summary["PipelineExecutionArn"]
    )
    parameters = {p["Name"]: p["Value"] for p in listed["PipelineParameters"]}
    run = f"s3://{BUCKET}/adaptive-retraining/runs/churn/{LOOP}"
    assert parameters == {
        "TriggerType": "drift",
        "TriggerReason": "",
        "EventCount": "3",
        "DriftSeverity": "high",
        "TrainPath": f"{run}/input/train/train.parquet",
        "ValidationPath": f"{run}/input/validation/validation.parquet",
        "JobConfigPath": f"{run}/input/config/job.json",
        "ModelOutputPath": f"{run}/model",
    }
    assert keys(training, f"adaptive-retraining/runs/churn/{LOOP}/input/") == []

    again = training.train(job, no_heartbeat)
    assert again.reused and len(emulator.runs) == 1
    assert (
        len(sagemaker.list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"])
        == 1
    )


def test_pipeline_cancellation_stops_the_execution(
    backend: tuple[SageMakerTraining, ContainerEmulator], job: TrainingJob
) -> None:
    training = pipeline_training(backend)
    arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:pipeline/{PIPELINE}/execution/abc123"

    def cancelled(text: str) -> None:
        raise CancelledError("training cancelled")

    with Stubber(training.clients.sagemaker) as stub:
        stub.add_response(
            "list_pipeline_executions",
            {"PipelineExecutionSummaries": [
                {"PipelineExecutionArn": arn, "PipelineExecutionDisplayName": resource_name(LOOP)}
            ]},
        )  # fmt: skip
        stub.add_response(
            "describe_pipeline_execution",
            {"PipelineExecutionArn": arn, "PipelineExecutionStatus": "Executing"},
        )
        stub.add_response(
            "stop_pipeline_execution",
            {"PipelineExecutionArn": arn},
            {"PipelineExecutionArn": arn, "ClientRequestToken": ANY},
        )
        with pytest.raises(CancelledError):
            training.train(job, cancelled)
        stub.assert_no_pending_responses()


def test_a_failed_pipeline_is_non_retryable_with_its_reason(
    backend: tuple[SageMakerTraining, ContainerEmulator], job: TrainingJob
) -> None:
    training = pipeline_training(backend)
    arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:pipeline/{PIPELINE}/execution/abc123"
    with Stubber(training.clients.sagemaker) as stub:
        stub.add_response(
            "list_pipeline_executions",
            {"PipelineExecutionSummaries": [
                {"PipelineExecutionArn": arn, "PipelineExecutionDisplayName": resource_name(LOOP)}
            ]},
        )  # fmt: skip
        stub.add_response(
            "describe_pipeline_execution",
            {
                "PipelineExecutionArn": arn,
                "PipelineExecutionStatus": "Failed",
                "FailureReason": "Step Train failed: ClientError: out of memory",
            },
        )
        with pytest.raises(ApplicationError) as raised:
            training.train(job, no_heartbeat)
    assert raised.value.type == ErrorType.TRAINING_ENTRYPOINT and raised.value.non_retryable
    assert "out of memory" in str(raised.value)
