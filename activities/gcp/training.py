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

Pipeline mode (`settings.pipeline_template`: a compiled KFP spec, local or gs://, turned into
a PipelineJob by `activities.gcp.pipelines`) - the pipeline must
- declare the STRING parameters trigger_type, trigger_reason, event_count, drift_severity,
  train_path, validation_path, job_config_path and model_output_path (all are passed);
- read the TrainingJob JSON at job_config_path and the data at train_path / validation_path
  (gs:// uris of single objects), e.g. by running `activities.container_entry` in a step;
- write result.json and the artifact into model_output_path (a gs:// prefix), as
  `container_entry --model-dir` does, and succeed only once they exist.

Jobs go through the GAPIC v1 JobServiceClient and PipelineServiceClient (`GcpClients.jobs`,
`.pipelines`), every call inside `gcp_call`.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar, cast

import google.cloud.aiplatform_v1 as aiplatform_v1
from google.api_core import exceptions as gexc
from temporalio.exceptions import ApplicationError

from activities.cloud_training import fetch_model_dir, poll
from activities.gcp.clients import GcpClients
from activities.gcp.errors import gcp_call
from activities.gcp.gcs_store import GcsStore, gcs_location
from activities.gcp.pipelines import load_template, pipeline_job
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

_Job = TypeVar("_Job", aiplatform_v1.CustomJob, aiplatform_v1.PipelineJob)


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


def _time(field: object) -> datetime | None:
    """A Timestamp field's value: proto-plus gives a datetime (None when unset), where the
    messages' annotations say Timestamp."""
    return cast("datetime | None", field)


def _state(resource: aiplatform_v1.CustomJob | aiplatform_v1.PipelineJob) -> str:
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

    def cost(self, custom_job: aiplatform_v1.CustomJob) -> float | None:
        """A CustomJob's cost: its run time (start to end) x replicas x the machine type's
        hourly price (`VertexSettings.training_price`); None without both times or a price."""
        start, end = _time(custom_job.start_time), _time(custom_job.end_time)
        price = self.settings.training_price(self.settings.machine_type)
        if not start or not end or price is None:
            return None
        hours = max(0.0, float((end - start).total_seconds())) / 3600
        return round(hours * self.settings.replica_count * price, 6)

    # ---- CustomJob -----------------------------------------------------------------------

    def _run_custom_job(
        self, job: TrainingJob, heartbeat: Callable[[str], None]
    ) -> tuple[bool, float | None]:
        model, loop_id = job.request.model, job.request.loop_id
        key = loop_key(model, loop_id)
        with gcp_call(f"list Vertex CustomJobs of {loop_id}"):
            found = list(
                self.clients.jobs.list_custom_jobs(
                    request={
                        "parent": self.clients.vertex_parent,
                        "filter": f'labels.{LOOP_KEY}="{key}"',
                    }
                )
            )
        # An earlier attempt's job, unless it was cancelled (then this attempt trains anew).
        alive = [j for j in found if _state(j) not in ("CANCELLED", "CANCELLING")]
        if alive:
            # The oldest: every listed job has its creation time (a datetime, see `_time`).
            custom_job = min(alive, key=lambda j: cast(datetime, j.create_time))
        else:
            custom_job = self._create_custom_job(job)
        name = custom_job.name
        finished = self._wait(
            lambda: self.clients.jobs.get_custom_job(name=name),
            lambda: self.clients.jobs.cancel_custom_job(name=name),
            f"CustomJob {name}",
            self.run_uri(model, loop_id),
            heartbeat,
        )
        return bool(alive), self.cost(finished)

    def _create_custom_job(self, job: TrainingJob) -> aiplatform_v1.CustomJob:
        """The CustomJob the aiplatform SDK's `CustomJob(...).submit(...)` created."""
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
        worker_pool = aiplatform_v1.WorkerPoolSpec(
            machine_spec=aiplatform_v1.MachineSpec(machine_type=self.settings.machine_type),
            replica_count=self.settings.replica_count,
            container_spec=aiplatform_v1.ContainerSpec(
                image_uri=self.settings.training_image,
                command=["python", "-m", "activities.container_entry"],
                args=arguments,
            ),
        )
        custom_job = aiplatform_v1.CustomJob(
            display_name=f"{job.request.model}-{job.request.loop_id}"[:128],
            job_spec=aiplatform_v1.CustomJobSpec(
                worker_pool_specs=[worker_pool],
                base_output_directory=aiplatform_v1.GcsDestination(
                    output_uri_prefix=f"{run}/output"
                ),
                service_account=self.settings.service_account,
                scheduling=aiplatform_v1.Scheduling(
                    timeout=timedelta(seconds=max(1, int(job.timeout_seconds)))
                ),
            ),
            labels=labels_for(job, self.settings),
        )
        with gcp_call(f"create Vertex CustomJob for {job.request.loop_id}"):
            return self.clients.jobs.create_custom_job(
                parent=self.clients.vertex_parent, custom_job=custom_job
            )

    # ---- PipelineJob ---------------------------------------------------------------------

    def _run_pipeline(
        self, job: TrainingJob, template: str, heartbeat: Callable[[str], None]
    ) -> bool:
        model, loop_id = job.request.model, job.request.loop_id
        name = f"{self.clients.vertex_parent}/pipelineJobs/{pipeline_job_id(model, loop_id)}"
        reused = self._get_pipeline(name) is not None
        if not reused:
            self._submit_pipeline(job, template)
        self._wait(
            lambda: self.clients.pipelines.get_pipeline_job(name=name),
            lambda: self.clients.pipelines.cancel_pipeline_job(name=name),
            f"PipelineJob {name}",
            self.run_uri(model, loop_id),
            heartbeat,
        )
        return reused

    def _get_pipeline(self, name: str) -> aiplatform_v1.PipelineJob | None:
        with gcp_call(f"get Vertex PipelineJob {name}"):
            try:
                return self.clients.pipelines.get_pipeline_job(name=name)
            except gexc.NotFound:
                return None

    def _submit_pipeline(self, job: TrainingJob, template: str) -> None:
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
        if template.startswith("gs://"):
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / Path(gcs_location(template)[1]).name
                self.store.download(template, local)
                compiled = load_template(local)
        else:
            compiled = load_template(Path(template))
        pipeline = pipeline_job(
            compiled,
            display_name=f"{model}-{loop_id}"[:128],
            pipeline_root=f"{run}/output/pipeline",
            parameters=parameters,
            labels=labels_for(job, self.settings),
            service_account=self.settings.service_account,
        )
        # ALREADY_EXISTS (a 409, which google-api-core raises over REST as Conflict, the base of
        # AlreadyExists): a concurrent attempt submitted this loop's job first; it is waited for.
        with gcp_call(f"submit Vertex PipelineJob for {loop_id}"), suppress(gexc.Conflict):
            self.clients.pipelines.create_pipeline_job(
                parent=self.clients.vertex_parent,
                pipeline_job=pipeline,
                pipeline_job_id=pipeline_job_id(model, loop_id),
            )

    # ---- shared --------------------------------------------------------------------------

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

    def _wait(
        self,
        get: Callable[[], _Job],
        cancel: Callable[[], None],
        what: str,
        run: str,
        heartbeat: Callable[[str], None],
    ) -> _Job:
        """Poll until the job ends, heartbeating; a cancelled activity cancels the job.
        Returns the job as last read."""

        def read() -> _Job:
            with gcp_call(f"get {what}"):
                return get()

        def cancel_job() -> None:
            with gcp_call(f"cancel {what}"):
                cancel()

        finished = poll(
            read,
            lambda found: _state(found) in _DONE,
            lambda found: f"Vertex {what}: {_state(found)}",
            heartbeat,
            poll_seconds=self.poll_seconds,
            max_poll_seconds=self.max_poll_seconds,
            cancel=cancel_job,
        )
        state = _state(finished)
        if state == "SUCCEEDED":
            return finished
        reason = self._failure_text(f"{run}/output/failure") or _error_message(finished)
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


def _error_message(resource: aiplatform_v1.CustomJob | aiplatform_v1.PipelineJob) -> str:
    error = resource.error
    return str(error.message) if error is not None and error.message else "no reason given"
