"""A test-side emulation of the SageMaker training container, for moto.

moto completes training jobs and pipeline executions instantly and never runs a container, so
`ContainerEmulator.attach(client)` registers botocore `after-call` hooks on a SageMaker client:
after CreateTrainingJob (or StartPipelineExecution) succeeds it does what SageMaker (or the
user's pipeline) would: download the input channels from moto's S3 into a fake `/opt/ml` tree,
run `python -m activities.container_entry` in a subprocess with the job's own ContainerArguments
(paths re-rooted), tar the model dir into model.tar.gz and upload it where DescribeTrainingJob's
ModelArtifacts.S3ModelArtifacts points (moto: <S3OutputPath>/<job name>/output/model.tar.gz,
as on SageMaker) or to <ModelOutputPath>/model.tar.gz for a pipeline. It also reports the job's
TrainingTimeInSeconds and BillableTimeInSeconds from the run it played (moto has neither).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.sagemaker.models import sagemaker_backends

from activities.aws.s3_store import s3_location
from tests.support.aws_harness import ACCOUNT, REGION

OPT_ML = "/opt/ml"


@dataclass
class ContainerEmulator:
    s3: Any
    runs: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def attach(self, sagemaker: Any) -> None:
        self._register(sagemaker.meta.events, sagemaker)

    def attach_session(self, session: Any, sagemaker: Any) -> None:
        """Play the container for every client `session` creates from now on (a worker's),
        describing jobs through `sagemaker` (the test's own client)."""
        self._register(session.events, sagemaker)

    def _register(self, events: Any, sagemaker: Any) -> None:
        events.register("after-call.sagemaker.CreateTrainingJob", self._on_training_job)
        events.register("after-call.sagemaker.StartPipelineExecution", self._on_pipeline)
        self._sagemaker = sagemaker

    def _on_training_job(self, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        if http_response.status_code >= 300:
            return
        name = parsed["TrainingJobArn"].rsplit("/", 1)[1]
        described = self._sagemaker.describe_training_job(TrainingJobName=name)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for channel in described["InputDataConfig"]:
                prefix = channel["DataSource"]["S3DataSource"]["S3Uri"]
                self._download_prefix(prefix, root / "input" / "data" / channel["ChannelName"])
            arguments = [
                argument.replace(OPT_ML, str(root))
                for argument in described["AlgorithmSpecification"]["ContainerArguments"]
            ]
            seconds = self._run(name, arguments, root)
            self._upload_model(root / "model", described["ModelArtifacts"]["S3ModelArtifacts"])
        set_training_times(name, seconds)

    def _on_pipeline(self, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        if http_response.status_code >= 300:
            return
        arn = parsed["PipelineExecutionArn"]
        listed = self._sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)
        parameters = {item["Name"]: item["Value"] for item in listed["PipelineParameters"]}
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            paths = {}
            for name in ("JobConfigPath", "TrainPath", "ValidationPath"):
                paths[name] = root / "input" / name / parameters[name].rsplit("/", 1)[1]
                self._download(parameters[name], paths[name])
            arguments = [
                "--job", str(paths["JobConfigPath"]),
                "--train", str(paths["TrainPath"]),
                "--validation", str(paths["ValidationPath"]),
                "--model-dir", str(root / "model"),
                "--failure-file", str(root / "output" / "failure"),
                "--backend", "sagemaker-pipeline",
            ]  # fmt: skip
            self._run(arn, arguments, root)
            self._upload_model(root / "model", f"{parameters['ModelOutputPath']}/model.tar.gz")

    def _run(self, name: str, arguments: list[str], root: Path) -> float:
        """Run the container's entry; the wall time it took."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "activities.container_entry", *arguments],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        self.runs.append(name)
        if done.returncode != 0:
            failure = root / "output" / "failure"
            reason = failure.read_text() if failure.exists() else done.stderr
            self.failures.append(reason)
            _mark_failed(name, reason)
        return time.monotonic() - started

    def _download(self, uri: str, target: Path) -> None:
        bucket, key = s3_location(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.s3.download_file(bucket, key, str(target))

    def _download_prefix(self, uri: str, directory: Path) -> None:
        bucket, prefix = s3_location(uri)
        for item in self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
            relative = item["Key"][len(prefix) :].lstrip("/")
            self._download(f"s3://{bucket}/{item['Key']}", directory / relative)

    def _upload_model(self, model_dir: Path, uri: str) -> None:
        if not model_dir.is_dir():
            return
        archive = model_dir.parent / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(model_dir.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(model_dir)), recursive=False)
        bucket, key = s3_location(uri)
        self.s3.upload_file(str(archive), bucket, key)


# Managed spot: the share of the training time billed (AWS reports the savings as
# 1 - BillableTimeInSeconds / TrainingTimeInSeconds; 70% is a typical spot discount).
SPOT_BILLED_SHARE = 0.3


def set_training_times(name: str, seconds: float) -> None:
    """What SageMaker reports of a finished job's time (moto reports none): TrainingTimeInSeconds
    and BillableTimeInSeconds (shorter on managed spot), whole seconds, at least one."""
    job = sagemaker_backends[ACCOUNT][REGION].training_jobs.get(name)
    if job is None:
        return
    training = max(1, math.ceil(seconds))
    billed = training
    if job.enable_managed_spot_training:
        billed = max(1, math.ceil(training * SPOT_BILLED_SHARE))
    job.training_time_in_seconds = training  # type: ignore[attr-defined]
    job.billable_time_in_seconds = billed  # type: ignore[attr-defined]


def _mark_failed(name: str, reason: str) -> None:
    """What SageMaker reports for a job whose container exited non-zero (moto would say
    Completed): status Failed, the failure file as FailureReason. Pipelines are left alone."""
    job = sagemaker_backends[ACCOUNT][REGION].training_jobs.get(name)
    if job is None:
        return
    job.training_job_status = "Failed"
    job.secondary_status = "Failed"
    job.failure_reason = f"AlgorithmError: {reason}"[:1024]  # type: ignore[attr-defined]
