"""Training on SageMaker: a training job per loop, or an execution of the model's Pipeline.

Idempotent by loop id. The job's name (and the pipeline execution's display name and client
token) derive from `job.request.loop_id`, so a retried activity finds what an earlier attempt
started and adopts it (`reused=True`) instead of training twice.

Layout on S3, under `s3://<bucket>/<prefix>/runs/<model>/<loop_id>/`:

    input/config/job.json            the TrainingJob (the container entry reads it)
    input/train/<file>               the training data
    input/validation/<file>          the validation data
    output/<job name>/output/model.tar.gz   what a training job writes (SageMaker's layout)
    model/model.tar.gz               what a pipeline execution must write (below)

`input/` is temporary: it is deleted once the training has ended. Locally, the archive is
extracted into `<home>/runs/<model>/<loop_id>/training/output/`, the same place the local
backend uses, and its `result.json` (written by `activities.container_entry`) gives the artifact,
whose sha256 is checked.

Training job mode runs `python -m activities.container_entry` in `settings.training_image`
(which must contain this package and the user's entrypoint module), on managed spot capacity
when `settings.managed_spot` (checkpoints under the run's `checkpoints/`). Its cost is
BillableTimeInSeconds x instance count x the instance type's hourly price
(`SageMakerSettings.training_price`: the spec's table over documented defaults); a pipeline's
cost is not summed (None: the coordinator keeps its estimate).

Pipeline mode (`settings.pipeline_name`): the user's pipeline must
- declare the String parameters TriggerType, TriggerReason, EventCount, DriftSeverity,
  TrainPath, ValidationPath, JobConfigPath and ModelOutputPath (all are passed, as strings);
- read the TrainingJob JSON at JobConfigPath and the data at TrainPath / ValidationPath (S3 uris
  of single objects), e.g. by running `activities.container_entry` in a training step;
- write `<ModelOutputPath>/model.tar.gz` holding `result.json` and the artifact at its root
  (what `activities.container_entry --model-dir` produces), and succeed only once it exists.
"""

from __future__ import annotations

import hashlib
import math
import re
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from temporalio.exceptions import ApplicationError

from activities.aws.clients import AwsClients
from activities.aws.errors import aws_call, error_code
from activities.aws.s3_store import S3Store, s3_location
from activities.cloud_training import poll
from activities.local.training import checked_names
from activities.mirror import is_remote
from activities.training_runner import RESULT_FILE, sha256_file
from workflows.common.errors import ErrorType
from workflows.loop.models import TrainingJob, TrainingResult
from workflows.spec.sagemaker import SageMakerSettings

BACKEND = "sagemaker"
CONTAINER_DATA = "/opt/ml/input/data"
NAME_LIMIT = 63

_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9]+")
_PIPELINE_PARAMETERS = {
    "TriggerType": "trigger_type",
    "TriggerReason": "trigger_reason",
    "EventCount": "event_count",
    "DriftSeverity": "drift_severity",
}


def resource_name(loop_id: str, limit: int = NAME_LIMIT) -> str:
    """A valid SageMaker name for the loop; a hash suffix keeps cut or cleaned names distinct."""
    clean = _NOT_IN_NAMES.sub("-", loop_id).strip("-")
    if clean == loop_id and len(clean) <= limit:
        return clean
    suffix = hashlib.sha256(loop_id.encode()).hexdigest()[:8]
    return f"{clean[: limit - len(suffix) - 1].rstrip('-')}-{suffix}".lstrip("-")


def request_token(loop_id: str, purpose: str) -> str:
    """A pipeline ClientRequestToken (32-128 characters) that is the same for every retry."""
    return hashlib.sha256(f"{purpose}:{loop_id}".encode()).hexdigest()


def _is_missing(error: ClientError) -> bool:
    # Real SageMaker: ValidationException "Requested resource not found."; moto: "Could not find".
    message = str(error.response.get("Error", {}).get("Message", "")).lower()
    return error_code(error) == "ResourceNotFound" or (
        error_code(error) == "ValidationException"
        and ("not found" in message or "could not find" in message)
    )


class SageMakerTraining:
    def __init__(
        self,
        clients: AwsClients,
        settings: SageMakerSettings,
        home: Path,
        poll_seconds: float = 5.0,
        max_poll_seconds: float = 60.0,
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.home = home
        self.poll_seconds = poll_seconds
        self.max_poll_seconds = max_poll_seconds
        self.store = S3Store(clients)

    @property
    def _sagemaker(self) -> Any:
        return self.clients.sagemaker

    def run_uri(self, model: str, loop_id: str) -> str:
        return f"s3://{self.settings.bucket}/{self.settings.prefix}/runs/{model}/{loop_id}"

    def training_dir(self, model: str, loop_id: str) -> Path:
        return self.home / "runs" / model / loop_id / "training"

    def train(self, job: TrainingJob, heartbeat: Callable[[str], None]) -> TrainingResult:
        model, loop_id = checked_names(job)
        cost: float | None = None
        if self.settings.pipeline_name is not None:
            archive_uri, duration, reused = self._run_pipeline(
                job, self.settings.pipeline_name, heartbeat
            )
        else:
            archive_uri, duration, reused, cost = self._run_training_job(job, heartbeat)
        self._delete_inputs(model, loop_id)
        return self._fetch_result(job, archive_uri, duration, reused, cost)

    # ---- training job ------------------------------------------------------------------------

    def _run_training_job(
        self, job: TrainingJob, heartbeat: Callable[[str], None]
    ) -> tuple[str, float | None, bool, float | None]:
        name = resource_name(job.request.loop_id)
        found = self._describe_job(name)
        reused = found is not None
        if found is None:
            self._create_job(name, job)
        described = self._wait_for_job(name, found, heartbeat)
        status = described["TrainingJobStatus"]
        if status == "Failed":
            self._delete_inputs(job.request.model, job.request.loop_id)
            raise ApplicationError(
                f"SageMaker training job {name} failed: {described.get('FailureReason', '')}",
                type=ErrorType.TRAINING_ENTRYPOINT,
                non_retryable=True,
            )
        if status == "Stopped":
            self._delete_inputs(job.request.model, job.request.loop_id)
            if described.get("SecondaryStatus") == "MaxRuntimeExceeded":
                raise ApplicationError(
                    f"SageMaker training job {name} exceeded its timeout of "
                    f"{job.timeout_seconds:g}s and was stopped",
                    type=ErrorType.TRAINING_TIMEOUT,
                    non_retryable=True,
                )
            raise ApplicationError(
                f"SageMaker training job {name} was stopped",
                type=ErrorType.TRAINING_STOPPED,
                non_retryable=True,
            )
        seconds = described.get("TrainingTimeInSeconds")
        archive = described["ModelArtifacts"]["S3ModelArtifacts"]
        return archive, None if seconds is None else float(seconds), reused, self.cost(described)

    def cost(self, described: dict[str, Any]) -> float | None:
        """What the job cost: BillableTimeInSeconds x instances x the instance type's hourly
        price (managed spot's savings are in the billable time, which spot shortens); None
        when SageMaker reports no billable time or no price table names the type."""
        billable = described.get("BillableTimeInSeconds")
        resources = described.get("ResourceConfig", {})
        instance_type = resources.get("InstanceType", self.settings.training_instance_type)
        price = self.settings.training_price(instance_type)
        if billable is None or price is None:
            return None
        count = int(resources.get("InstanceCount", self.settings.training_instance_count))
        return round(float(billable) * count * price / 3600, 6)

    def _describe_job(self, name: str) -> dict[str, Any] | None:
        with aws_call(f"DescribeTrainingJob {name}"):
            try:
                described: dict[str, Any] = self._sagemaker.describe_training_job(
                    TrainingJobName=name
                )
            except ClientError as error:
                if _is_missing(error):
                    return None
                raise
        return described

    def _create_job(self, name: str, job: TrainingJob) -> None:
        inputs = self._stage_inputs(job)
        settings = self.settings
        arguments = [
            "--job",
            f"{CONTAINER_DATA}/config/job.json",
            "--train",
            f"{CONTAINER_DATA}/train/{inputs['train'].rsplit('/', 1)[1]}",
            "--validation",
            f"{CONTAINER_DATA}/validation/{inputs['validation'].rsplit('/', 1)[1]}",
            "--model-dir",
            "/opt/ml/model",
            "--failure-file",
            "/opt/ml/output/failure",
            "--backend",
            BACKEND,
        ]
        run = self.run_uri(job.request.model, job.request.loop_id)
        channels = [
            {
                "ChannelName": channel,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"{run}/input/{channel}/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }
            for channel in ("config", "train", "validation")
        ]
        with aws_call(f"CreateTrainingJob {name}"):
            self._sagemaker.create_training_job(
                TrainingJobName=name,
                AlgorithmSpecification={
                    "TrainingImage": settings.training_image,
                    "TrainingInputMode": "File",
                    "ContainerEntrypoint": ["python", "-m", "activities.container_entry"],
                    "ContainerArguments": arguments,
                },
                RoleArn=settings.role_arn,
                InputDataConfig=channels,
                OutputDataConfig={"S3OutputPath": f"{run}/output"},
                ResourceConfig={
                    "InstanceType": settings.training_instance_type,
                    "InstanceCount": settings.training_instance_count,
                    "VolumeSizeInGB": settings.training_volume_gb,
                },
                Tags=[{"Key": key, "Value": value} for key, value in self._tags(job).items()],
                **self._stopping(job, run),
            )

    def _stopping(self, job: TrainingJob, run: str) -> dict[str, Any]:
        """The stopping condition, and managed spot (which needs a wait bound and resumes
        from checkpoints) when the settings ask for it."""
        runtime = max(1, math.ceil(job.timeout_seconds))
        if not self.settings.managed_spot:
            return {"StoppingCondition": {"MaxRuntimeInSeconds": runtime}}
        wait = self.settings.max_spot_wait
        return {
            "EnableManagedSpotTraining": True,
            "StoppingCondition": {
                "MaxRuntimeInSeconds": runtime,
                # At least the runtime, as SageMaker requires; by default twice it.
                "MaxWaitTimeInSeconds": max(
                    runtime, math.ceil(wait.total_seconds()) if wait else 2 * runtime
                ),
            },
            "CheckpointConfig": {"S3Uri": f"{run}/checkpoints"},
        }

    def _wait_for_job(
        self, name: str, described: dict[str, Any] | None, heartbeat: Callable[[str], None]
    ) -> dict[str, Any]:
        """Poll until the job ends, starting from `described` when the job was just found;
        a cancelled activity stops the job."""
        known = iter([described] if described is not None else [])

        def read() -> dict[str, Any]:
            found = next(known, None) or self._describe_job(name)
            if found is None:
                raise ApplicationError(f"SageMaker training job {name} disappeared")
            return found

        def stop() -> None:
            with aws_call(f"StopTrainingJob {name}"):
                self._sagemaker.stop_training_job(TrainingJobName=name)

        return poll(
            read,
            lambda found: found["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"),
            lambda found: _job_progress(name, found),
            heartbeat,
            poll_seconds=self.poll_seconds,
            max_poll_seconds=self.max_poll_seconds,
            cancel=stop,
        )

    # ---- pipeline ----------------------------------------------------------------------------

    def _run_pipeline(
        self, job: TrainingJob, pipeline: str, heartbeat: Callable[[str], None]
    ) -> tuple[str, float | None, bool]:
        loop_id = job.request.loop_id
        display_name = resource_name(loop_id)
        output = f"{self.run_uri(job.request.model, loop_id)}/model"
        arn = self._find_execution(pipeline, display_name)
        reused = arn is not None
        if arn is None:
            inputs = self._stage_inputs(job)
            parameters = {
                name: job.parameters.get(key, "") for name, key in _PIPELINE_PARAMETERS.items()
            } | {
                "TrainPath": inputs["train"],
                "ValidationPath": inputs["validation"],
                "JobConfigPath": inputs["config"],
                "ModelOutputPath": output,
            }
            with aws_call(f"StartPipelineExecution {pipeline}"):
                arn = str(
                    self._sagemaker.start_pipeline_execution(
                        PipelineName=pipeline,
                        PipelineExecutionDisplayName=display_name,
                        PipelineExecutionDescription=f"Training of {loop_id}",
                        PipelineParameters=[
                            {"Name": name, "Value": value} for name, value in parameters.items()
                        ],
                        ClientRequestToken=request_token(loop_id, "start"),
                    )["PipelineExecutionArn"]
                )
        described = self._wait_for_execution(arn, loop_id, heartbeat)
        status = described["PipelineExecutionStatus"]
        if status != "Succeeded":
            self._delete_inputs(job.request.model, loop_id)
            failed = status == "Failed"
            raise ApplicationError(
                f"SageMaker pipeline execution {arn} {status.lower()}: "
                f"{described.get('FailureReason', '')}",
                type=ErrorType.TRAINING_ENTRYPOINT if failed else ErrorType.TRAINING_STOPPED,
                non_retryable=True,
            )
        return f"{output}/model.tar.gz", None, reused

    def _find_execution(self, pipeline: str, display_name: str) -> str | None:
        with aws_call(f"ListPipelineExecutions {pipeline}"):
            pages = self._sagemaker.get_paginator("list_pipeline_executions").paginate(
                PipelineName=pipeline
            )
            for page in pages:
                for summary in page.get("PipelineExecutionSummaries", []):
                    if summary.get("PipelineExecutionDisplayName") == display_name:
                        return str(summary["PipelineExecutionArn"])
        return None

    def _wait_for_execution(
        self, arn: str, loop_id: str, heartbeat: Callable[[str], None]
    ) -> dict[str, Any]:
        """Poll until the execution ends; a cancelled activity stops it."""

        def read() -> dict[str, Any]:
            with aws_call(f"DescribePipelineExecution {arn}"):
                described: dict[str, Any] = self._sagemaker.describe_pipeline_execution(
                    PipelineExecutionArn=arn
                )
            return described

        def stop() -> None:
            with aws_call(f"StopPipelineExecution {arn}"):
                self._sagemaker.stop_pipeline_execution(
                    PipelineExecutionArn=arn, ClientRequestToken=request_token(loop_id, "stop")
                )

        return poll(
            read,
            lambda found: found["PipelineExecutionStatus"] in ("Succeeded", "Failed", "Stopped"),
            lambda found: f"SageMaker pipeline execution {arn}: {found['PipelineExecutionStatus']}",
            heartbeat,
            poll_seconds=self.poll_seconds,
            max_poll_seconds=self.max_poll_seconds,
            cancel=stop,
        )

    # ---- shared ------------------------------------------------------------------------------

    def _tags(self, job: TrainingJob) -> dict[str, str]:
        fixed = {"model": job.request.model, "loop-id": job.request.loop_id}
        return self.settings.tags | job.tags | fixed

    def _local(self, path: str) -> Path:
        found = Path(path)
        return found if found.is_absolute() else self.home / found

    def _stage_inputs(self, job: TrainingJob) -> dict[str, str]:
        """Upload the job and its two data files; the channel -> object uri."""
        request = job.request
        run = self.run_uri(request.model, request.loop_id)
        tags = self._tags(job)
        staged: dict[str, str] = {}
        for channel, path in (
            ("train", request.train_path),
            ("validation", request.validation_path),
        ):
            if is_remote(path):
                raise ApplicationError(
                    f"{channel} data must be a local file for SageMaker staging, got {path}",
                    type=ErrorType.INVALID_TRAINING_JOB,
                    non_retryable=True,
                )
            source = self._local(path)
            staged[channel] = self.store.upload(
                source, f"{run}/input/{channel}/{source.name}", tags
            ).uri
        staged["config"] = self.store.put_text(
            f"{run}/input/config/job.json", job.model_dump_json(indent=2)
        )
        return staged

    def _delete_inputs(self, model: str, loop_id: str) -> None:
        staged = self.store.list(f"{self.run_uri(model, loop_id)}/input/")
        if not staged:
            return
        bucket = self.settings.bucket
        keys = [{"Key": s3_location(item.uri)[1]} for item in staged]
        with aws_call(f"DeleteObjects s3://{bucket}/.../{loop_id}/input/"):
            # DeleteObjects takes at most 1000 keys per call.
            for start in range(0, len(keys), 1000):
                self.clients.s3.delete_objects(
                    Bucket=bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True}
                )

    def _fetch_result(
        self,
        job: TrainingJob,
        archive_uri: str,
        duration: float | None,
        reused: bool,
        cost: float | None = None,
    ) -> TrainingResult:
        directory = self.training_dir(job.request.model, job.request.loop_id)
        archive = directory / "model.tar.gz"
        self.store.download(archive_uri, archive)
        output = directory / "output"
        # A previous attempt's extraction is replaced whole, never merged.
        shutil.rmtree(output, ignore_errors=True)
        output.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(output, filter="data")
        result_file = output / RESULT_FILE
        if not result_file.is_file():
            raise ApplicationError(
                f"{archive_uri} has no {RESULT_FILE} (activities.container_entry writes it)",
                type=ErrorType.TRAINING_OUTPUT_MISMATCH,
                non_retryable=True,
            )
        result = TrainingResult.model_validate_json(result_file.read_text())
        artifact = (output / result.artifact_path).resolve()
        if not artifact.is_relative_to(output.resolve()) or not artifact.is_file():
            raise ApplicationError(
                f"{archive_uri} lacks the artifact {result.artifact_path}",
                type=ErrorType.TRAINING_OUTPUT_MISMATCH,
                non_retryable=True,
            )
        digest = sha256_file(artifact)
        if digest != result.artifact_sha256:
            raise ApplicationError(
                f"{artifact} has sha256 {digest}, not {result.artifact_sha256} as trained",
                type=ErrorType.TRAINING_OUTPUT_MISMATCH,
                non_retryable=True,
            )
        return result.model_copy(
            update={
                "artifact_path": str(artifact),
                "duration_seconds": result.duration_seconds if duration is None else duration,
                "backend": BACKEND,
                "reused": reused,
                "cost": cost,
            }
        )


def _job_progress(name: str, described: dict[str, Any]) -> str:
    transitions = described.get("SecondaryStatusTransitions") or [{}]
    message = transitions[-1].get("StatusMessage", "")
    return (
        f"SageMaker training job {name}: {described['TrainingJobStatus']}"
        f"/{described.get('SecondaryStatus', '')} {message}"
    )[:500]
