"""Training on Vertex AI: a CustomJob per loop, or a PipelineJob from the model's template.

Idempotent by loop id. A CustomJob carries the label `loop_key` (a hash of model and loop id:
labels cannot hold every loop id) and a PipelineJob's id derives from the loop id, so a retried
activity finds what an earlier attempt started and adopts it (`reused=True`).

Layout on GCS, under `<staging_bucket>/<prefix>/runs/<model>/<loop_id>/`:

    input/config/job.json       the TrainingJob (the container entry reads it)
    input/train/<file>          the training data (unless it already is a gs:// object)
    input/validation/<file>     the validation data (idem)
    output/model/               result.json + the artifact (`container_entry --model-dir`)
    output/failure              the entrypoint's error when it failed
    output/pipeline/            a PipelineJob's pipeline_root

`input/` is deleted once the training has succeeded. The model dir is downloaded into
`<home>/runs/<model>/<loop_id>/training/output/` (where the local backend trains) and the
artifact's sha256 is checked against `result.json`.

CustomJob mode runs `python -m activities.container_entry` in `settings.training_image` (which
must contain this package and the user's entrypoint module); Vertex mounts GCS at `/gcs/`, so the
container reads and writes `/gcs/<bucket>/<path>` directly. Its cost is the job's run time x
replicas x the machine type's hourly price (the spec's table over documented defaults); a
PipelineJob's is not summed (None: the coordinator keeps its estimate).

Pipeline mode (`settings.pipeline_template`: a compiled KFP spec, local or gs://) - the
pipeline must
- declare the STRING parameters trigger_type, trigger_reason, event_count, drift_severity,
  train_path, validation_path, job_config_path and model_output_path (all are passed);
- read the TrainingJob JSON at job_config_path and the data at train_path / validation_path
  (gs:// uris of single objects), e.g. by running `activities.container_entry` in a step;
- write result.json and the artifact into model_output_path (a gs:// prefix), as
  `container_entry --model-dir` does, and succeed only once they exist.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc
from temporalio.exceptions import ApplicationError

from activities.cloud_training import fetch_model_dir, poll
from activities.gcp.clients import GcpClients
from activities.gcp.errors import gcp_call
from activities.gcp.gcs_store import GcsStore, gcs_location
from activities.local.training import checked_names
from activities.mirror import is_remote
from workflows.common.errors import ErrorType
from workflows.loop.models import TrainingJob, TrainingResult
from workflows.spec.vertex import VertexSettings

BACKEND = "vertex"
LOOP_KEY = "loop_key"

_NOT_IN_LABEL_VALUES = re.compile(r"[^a-z0-9_-]+")
_NOT_IN_LABEL_KEYS = re.compile(r"[^a-z0-9_-]+")
_NOT_IN_IDS = re.compile(r"[^a-z0-9]+")
_PIPELINE_PARAMETERS = ("trigger_type", "trigger_reason", "event_count", "drift_severity")
_DONE = ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")


def label_value(value: str) -> str:
    """A GCP label value: lowercase letters, digits, `_` and `-`, at most 63 characters."""
    return _NOT_IN_LABEL_VALUES.sub("-", value.lower())[:63]


def label_key(key: str) -> str:
    clean = _NOT_IN_LABEL_KEYS.sub("_", key.lower())
    return (clean if clean[:1].isalpha() else f"k{clean}")[:63]


def labels_for(job: TrainingJob, settings: VertexSettings) -> dict[str, str]:
    """Chargeback labels (settings', then the loop's own), plus the loop's lookup key."""
    labels = dict(settings.labels)
    labels |= {label_key(key): label_value(value) for key, value in job.tags.items()}
    labels |= {
        "model": label_value(job.request.model),
        "loop_id": label_value(job.request.loop_id),
        LOOP_KEY: loop_key(job.request.model, job.request.loop_id),
    }
    return labels


def loop_key(model: str, loop_id: str) -> str:
    return hashlib.sha256(f"{model}/{loop_id}".encode()).hexdigest()[:32]


def pipeline_job_id(model: str, loop_id: str) -> str:
    """A PipelineJob id (`[a-z][-a-z0-9]{0,127}`), the same for every retry of the loop."""
    clean = _NOT_IN_IDS.sub("-", f"{model}-{loop_id}".lower()).strip("-")
    return f"retrain-{clean[:100].rstrip('-')}-{loop_key(model, loop_id)[:12]}"


def gcs_mount(uri: str) -> str:
    """Where a gs:// object appears inside a Vertex training container (Cloud Storage FUSE)."""
    bucket, name = gcs_location(uri)
    return f"/gcs/{bucket}/{name}"


def _state(resource: Any) -> str:
    """`JOB_STATE_RUNNING` / `PIPELINE_STATE_RUNNING` -> `RUNNING`."""
    return str(resource.state.name).split("_STATE_", 1)[-1]


class VertexTraining:
    def __init__(
        self,
        clients: GcpClients,
        settings: VertexSettings,
        home: Path,
        poll_seconds: float = 5.0,
        max_poll_seconds: float = 60.0,
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.home = home
        self.poll_seconds = poll_seconds
        self.max_poll_seconds = max_poll_seconds
        self.store = GcsStore(clients)

    def run_uri(self, model: str, loop_id: str) -> str:
        return f"{self.settings.staging_bucket}/{self.settings.prefix}/runs/{model}/{loop_id}"

    def training_dir(self, model: str, loop_id: str) -> Path:
        return self.home / "runs" / model / loop_id / "training"

    def train(self, job: TrainingJob, heartbeat: Callable[[str], None]) -> TrainingResult:
        model, loop_id = checked_names(job)
        self.clients.init_vertex()
        run = self.run_uri(model, loop_id)
        cost: float | None = None
        if self.settings.pipeline_template is not None:
            reused = self._run_pipeline(job, self.settings.pipeline_template, heartbeat)
        else:
            reused, cost = self._run_custom_job(job, heartbeat)
        output = self.training_dir(model, loop_id) / "output"
        result = fetch_model_dir(self.store, job, f"{run}/output/model", output, BACKEND, reused)
        self.store.delete_prefix(f"{run}/input/")
        return result.model_copy(update={"cost": cost})

    def cost(self, resource: Any) -> float | None:
        """A CustomJob's cost: its run time (start to end) x replicas x the machine type's
        hourly price (`VertexSettings.training_price`); None without both times or a price."""
        gca = resource.gca_resource
        start, end = gca.start_time, gca.end_time
        price = self.settings.training_price(self.settings.machine_type)
        if not start or not end or price is None:
            return None
        hours = max(0.0, float((end - start).total_seconds())) / 3600
        return round(hours * self.settings.replica_count * price, 6)

    # ---- CustomJob -----------------------------------------------------------------------

    def _run_custom_job(
        self, job: TrainingJob, heartbeat: Callable[[str], None]
    ) -> tuple[bool, float | None]:
        from google.cloud import aiplatform

        model, loop_id = job.request.model, job.request.loop_id
        key = loop_key(model, loop_id)
        with gcp_call(f"list Vertex CustomJobs of {loop_id}"):
            found = aiplatform.CustomJob.list(filter=f'labels.{LOOP_KEY}="{key}"', **self._where())
        # An earlier attempt's job, unless it was cancelled (then this attempt trains anew).
        alive = [j for j in found if _state(j) not in ("CANCELLED", "CANCELLING")]
        if alive:
            custom_job = min(alive, key=lambda j: j.create_time)
        else:
            custom_job = self._create_custom_job(job)
        run = self.run_uri(model, loop_id)
        self._wait(custom_job, f"CustomJob {custom_job.resource_name}", run, heartbeat)
        return bool(alive), self.cost(custom_job)

    def _create_custom_job(self, job: TrainingJob) -> Any:
        from google.cloud import aiplatform

        run = self.run_uri(job.request.model, job.request.loop_id)
        paths = self._stage(job, run)
        arguments = [
            "--job", gcs_mount(paths["job"]),
            "--train", gcs_mount(paths["train"]),
            "--validation", gcs_mount(paths["validation"]),
            "--model-dir", gcs_mount(f"{run}/output/model"),
            "--failure-file", gcs_mount(f"{run}/output/failure"),
            "--backend", BACKEND,
        ]  # fmt: skip
        worker_pool = {
            "machine_spec": {"machine_type": self.settings.machine_type},
            "replica_count": self.settings.replica_count,
            "container_spec": {
                "image_uri": self.settings.training_image,
                "command": ["python", "-m", "activities.container_entry"],
                "args": arguments,
            },
        }
        with gcp_call(f"create Vertex CustomJob for {job.request.loop_id}"):
            custom_job = aiplatform.CustomJob(
                display_name=f"{job.request.model}-{job.request.loop_id}"[:128],
                worker_pool_specs=[worker_pool],
                base_output_dir=f"{run}/output",
                staging_bucket=self.settings.staging_bucket,
                labels=labels_for(job, self.settings),
                **self._where(),
            )
            custom_job.submit(
                service_account=self.settings.service_account,
                timeout=max(1, int(job.timeout_seconds)),
            )
        return custom_job

    # ---- PipelineJob ---------------------------------------------------------------------

    def _run_pipeline(
        self, job: TrainingJob, template: str, heartbeat: Callable[[str], None]
    ) -> bool:
        model, loop_id = job.request.model, job.request.loop_id
        name = (
            f"projects/{self.clients.project}/locations/{self.clients.location}"
            f"/pipelineJobs/{pipeline_job_id(model, loop_id)}"
        )
        pipeline = self._get_pipeline(name)
        reused = pipeline is not None
        if pipeline is None:
            pipeline = self._submit_pipeline(job, template)
        self._wait(pipeline, f"PipelineJob {name}", self.run_uri(model, loop_id), heartbeat)
        return reused

    def _get_pipeline(self, name: str) -> Any | None:
        from google.cloud import aiplatform

        with gcp_call(f"get Vertex PipelineJob {name}"):
            try:
                return aiplatform.PipelineJob.get(name, **self._where())
            except gexc.NotFound:
                return None

    def _submit_pipeline(self, job: TrainingJob, template: str) -> Any:
        from google.cloud import aiplatform

        model, loop_id = job.request.model, job.request.loop_id
        run = self.run_uri(model, loop_id)
        paths = self._stage(job, run)
        parameters = {name: job.parameters.get(name, "none") for name in _PIPELINE_PARAMETERS}
        parameters |= {
            "train_path": paths["train"],
            "validation_path": paths["validation"],
            "job_config_path": paths["job"],
            "model_output_path": f"{run}/output/model",
        }
        with tempfile.TemporaryDirectory() as tmp:
            # The SDK would read a gs:// template through a default storage client; ours honours
            # the configured endpoint and credentials.
            local_template = template
            if template.startswith("gs://"):
                local_template = str(Path(tmp) / Path(gcs_location(template)[1]).name)
                self.store.download(template, Path(local_template))
            with gcp_call(f"submit Vertex PipelineJob for {loop_id}"):
                pipeline = aiplatform.PipelineJob(
                    display_name=f"{model}-{loop_id}"[:128],
                    template_path=local_template,
                    job_id=pipeline_job_id(model, loop_id),
                    pipeline_root=f"{run}/output/pipeline",
                    parameter_values=parameters,
                    labels=labels_for(job, self.settings),
                    **self._where(),
                )
                try:
                    pipeline.submit(service_account=self.settings.service_account)
                except gexc.AlreadyExists:
                    # A concurrent attempt submitted it first: that one is ours.
                    found = self._get_pipeline(pipeline.resource_name)
                    assert found is not None
                    return found
        return pipeline

    # ---- shared --------------------------------------------------------------------------

    def _where(self) -> dict[str, Any]:
        return {
            "project": self.clients.project,
            "location": self.clients.location,
            "credentials": self.clients.credentials,
        }

    def _stage(self, job: TrainingJob, run: str) -> dict[str, str]:
        """Upload what the container reads (data already on GCS is read where it is)."""
        staged: dict[str, str] = {}
        for channel, path in (
            ("train", job.request.train_path),
            ("validation", job.request.validation_path),
        ):
            if path.startswith("gs://"):
                staged[channel] = path
            elif is_remote(path):
                raise ApplicationError(
                    f"Vertex training cannot read {path}",
                    type=ErrorType.INVALID_TRAINING_JOB,
                    non_retryable=True,
                )
            else:
                uri = f"{run}/input/{channel}/{Path(path).name}"
                self.store.upload(Path(path), uri)
                staged[channel] = uri
        staged["job"] = self.store.put_text(
            f"{run}/input/config/job.json", job.model_dump_json(indent=2)
        )
        return staged

    def _wait(self, resource: Any, what: str, run: str, heartbeat: Callable[[str], None]) -> None:
        """Poll until the job ends, heartbeating; a cancelled activity cancels the job."""

        def read() -> str:
            with gcp_call(f"get {what}"):
                return _state(resource)  # the SDK reads the job anew for each `state`

        def cancel() -> None:
            with gcp_call(f"cancel {what}"):
                resource.cancel()

        state = poll(
            read,
            lambda state: state in _DONE,
            lambda state: f"Vertex {what}: {state}",
            heartbeat,
            poll_seconds=self.poll_seconds,
            max_poll_seconds=self.max_poll_seconds,
            cancel=cancel,
        )
        if state == "SUCCEEDED":
            return
        reason = self._failure_text(f"{run}/output/failure") or _error_message(resource)
        if state == "FAILED":
            raise ApplicationError(
                f"Vertex {what} failed: {reason}",
                type=ErrorType.TRAINING_ENTRYPOINT,
                non_retryable=True,
            )
        raise ApplicationError(
            f"Vertex {what} ended {state}: {reason}",
            type=ErrorType.TRAINING_STOPPED,
            non_retryable=True,
        )

    def _failure_text(self, uri: str) -> str | None:
        with tempfile.TemporaryDirectory() as tmp:
            if self.store.head(uri) is None:
                return None
            target = Path(tmp) / "failure"
            self.store.download(uri, target)
            return target.read_text(errors="replace").strip() or None


def _error_message(resource: Any) -> str:
    error = resource.error
    return str(error.message) if error is not None and error.message else "no reason given"
