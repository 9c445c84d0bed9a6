"""Training on Azure Machine Learning: one command job per loop, named by the loop id.

The job's name is derived from the model and loop id (`job_name`), so a retried activity finds
the job an earlier attempt submitted and adopts it (`reused=True`); a job name is unique in a
workspace forever, so after a cancelled job the next attempt submits `<name>-2`, and so on.
Chargeback tags (the settings', the loop's, `retrain.model`, `retrain.loop`) are on the job.

Layout in the settings' blob container, under `<prefix>/runs/<model>/<loop_id>/`:

    input/config/job.json       the TrainingJob (the container entry reads it)
    input/train/<file>          the training data (unless it already is in the container)
    input/validation/<file>     the validation data (idem)
    output/model/               result.json + the artifact (`container_entry --model-dir`)
    output/failure/failure      the entrypoint's error when it failed

Jobs reach those blobs through the workspace datastore (`azureml://datastores/<ds>/paths/..`):
inputs are mounted read-only, outputs read-write, so the failure file survives a failed job.
`input/` is deleted once the training has succeeded; the model dir is downloaded into
`<home>/runs/<model>/<loop_id>/training/output/` and the artifact's sha256 checked against
`result.json`.

The job's status is polled with back-off, heartbeating; a cancelled activity cancels the job.
Its failure reason is the entrypoint's failure file, else what run history says. Its cost is
its run time (run history's start to end) x instance count x the VM size's hourly price
(`AzureSettings.training_price`). Run history (what Studio shows) is read through azure-ai-ml's
run operations, the only place the SDK exposes a job's start, end and error.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from temporalio.exceptions import ApplicationError

from activities.azure.blob_store import BlobStore, blob_location
from activities.azure.clients import AzureClients
from activities.azure.errors import azure_call
from activities.cloud_training import fetch_model_dir, poll
from activities.local.training import checked_names
from activities.mirror import is_remote
from workflows.common.errors import ErrorType
from workflows.loop.models import TrainingJob, TrainingResult
from workflows.spec.azure import AzureSettings

BACKEND = "azure"
LOOP_TAG = "retrain.loop"
MODEL_TAG = "retrain.model"
DONE = ("Completed", "Failed", "Canceled", "NotResponding")
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_-]+")
COMMAND = (
    "python -m activities.container_entry --job ${{inputs.job}} --train ${{inputs.train}}"
    " --validation ${{inputs.validation}} --model-dir ${{outputs.model}}"
    " --failure-file ${{outputs.failure}}/failure --backend azure"
)


def job_name(model: str, loop_id: str, attempt: int = 1) -> str:
    """The job's name: readable, unique by a digest of model and loop id (Azure ML names are
    letters, digits, `_` and `-`, a letter or digit first)."""
    clean = _NOT_IN_NAMES.sub("-", f"{model}-{loop_id}").strip("-_")[:200]
    digest = hashlib.sha256(f"{model}/{loop_id}".encode()).hexdigest()[:12]
    name = f"retrain-{clean}-{digest}"
    return name if attempt == 1 else f"{name}-{attempt}"


def tags_for(job: TrainingJob, settings: AzureSettings) -> dict[str, str]:
    """Chargeback tags (the settings', then the loop's own) and our lookup tags."""
    return {
        **settings.tags,
        **job.tags,
        MODEL_TAG: job.request.model,
        LOOP_TAG: job.request.loop_id,
    }


def _status(found: Any) -> str:
    return str(getattr(found.status, "value", found.status))


class AzureTraining:
    def __init__(
        self,
        clients: AzureClients,
        settings: AzureSettings,
        home: Path,
        poll_seconds: float = 5.0,
        max_poll_seconds: float = 20.0,
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.home = home
        self.poll_seconds = poll_seconds
        self.max_poll_seconds = max_poll_seconds
        self.store = BlobStore(clients)

    def run_path(self, model: str, loop_id: str) -> str:
        """The run's path in the container (no scheme)."""
        return f"{self.settings.prefix}/runs/{model}/{loop_id}"

    def run_uri(self, model: str, loop_id: str) -> str:
        return f"az://{self.settings.container}/{self.run_path(model, loop_id)}"

    def training_dir(self, model: str, loop_id: str) -> Path:
        return self.home / "runs" / model / loop_id / "training"

    def train(self, job: TrainingJob, heartbeat: Callable[[str], None]) -> TrainingResult:
        model, loop_id = checked_names(job)
        found, reused = self._adopt_or_submit(job)
        name = str(found.name)
        status = self._wait(name, heartbeat)
        run = self.run_uri(model, loop_id)
        if status != "Completed":
            reason = self._failure_text(f"{run}/output/failure/failure") or self._run_error(name)
            kind = (
                ErrorType.TRAINING_ENTRYPOINT if status == "Failed" else ErrorType.TRAINING_STOPPED
            )
            raise ApplicationError(
                f"Azure ML job {name} ended {status}: {reason}", type=kind, non_retryable=True
            )
        output = self.training_dir(model, loop_id) / "output"
        result = fetch_model_dir(self.store, job, f"{run}/output/model", output, BACKEND, reused)
        self.store.delete_prefix(f"{run}/input/")
        return result.model_copy(update={"cost": self.cost(name)})

    def cost(self, name: str) -> float | None:
        """Run time (start to end) x instance count x the VM size's hourly price; None without
        both times or a price."""
        price = self.settings.training_price(self.settings.instance_type)
        with azure_call(f"read the run history of {name}"):
            run = self.clients.ml.jobs._runs_operations.get_run(name)
        start: datetime | None = run.start_time_utc
        end: datetime | None = run.end_time_utc
        if start is None or end is None or price is None:
            return None
        hours = max(0.0, (end - start).total_seconds()) / 3600
        return round(hours * self.settings.instance_count * price, 6)

    # ---- the job -----------------------------------------------------------------------------

    def _adopt_or_submit(self, job: TrainingJob) -> tuple[Any, bool]:
        model, loop_id = job.request.model, job.request.loop_id
        for attempt in range(1, 100):
            name = job_name(model, loop_id, attempt)
            with azure_call(f"get Azure ML job {name}"):
                try:
                    found = self.clients.ml.jobs.get(name)
                except ResourceNotFoundError:
                    return self._submit(job, name), False
            # An earlier attempt's job, unless it was cancelled (then this attempt trains anew).
            if _status(found) not in ("Canceled", "CancelRequested"):
                return found, True
        raise ApplicationError(
            f"{loop_id}: 99 cancelled Azure ML jobs", type=ErrorType.TRAINING_STOPPED
        )

    def _submit(self, job: TrainingJob, name: str) -> Any:
        from azure.ai.ml import Input, Output, command

        model, loop_id = job.request.model, job.request.loop_id
        path = self.run_path(model, loop_id)
        staged = self._stage(job, path)
        datastore = self.settings.datastore_uri
        built = command(
            name=name,
            display_name=f"{model} {loop_id}"[:255],
            experiment_name=self.settings.experiment_name,
            command=COMMAND,
            environment=self.settings.training_environment.removeprefix("azureml:"),
            compute=self.settings.compute,
            instance_count=self.settings.instance_count,
            inputs={
                channel: Input(type="uri_file", path=datastore(blob), mode="ro_mount")
                for channel, blob in staged.items()
            },
            outputs={
                "model": Output(type="uri_folder", path=datastore(f"{path}/output/model/")),
                "failure": Output(type="uri_folder", path=datastore(f"{path}/output/failure/")),
            },
            tags=tags_for(job, self.settings),
        )
        built.set_limits(timeout=max(60, int(job.timeout_seconds)))
        with azure_call(f"submit Azure ML job {name}"):
            return self.clients.ml.jobs.create_or_update(built)

    def _stage(self, job: TrainingJob, path: str) -> dict[str, str]:
        """Upload what the container reads; data already in the container is read where it is.
        Returns channel -> path in the container."""
        staged: dict[str, str] = {}
        container = self.settings.container
        for channel, source in (
            ("train", job.request.train_path),
            ("validation", job.request.validation_path),
        ):
            if source.startswith(f"az://{container}/"):
                staged[channel] = blob_location(source)[1]
            elif is_remote(source):
                raise ApplicationError(
                    f"Azure ML training reads the container {container}, not {source}",
                    type=ErrorType.INVALID_TRAINING_JOB,
                    non_retryable=True,
                )
            else:
                blob = f"{path}/input/{channel}/{Path(source).name}"
                self.store.upload(Path(source), f"az://{container}/{blob}")
                staged[channel] = blob
        staged["job"] = f"{path}/input/config/job.json"
        self.store.put_text(f"az://{container}/{staged['job']}", job.model_dump_json(indent=2))
        return staged

    def _wait(self, name: str, heartbeat: Callable[[str], None]) -> str:
        """Poll until the job ends, heartbeating; a cancelled activity cancels the job."""

        def read() -> str:
            with azure_call(f"get Azure ML job {name}"):
                return _status(self.clients.ml.jobs.get(name))

        def cancel() -> None:
            with azure_call(f"cancel Azure ML job {name}"):
                self.clients.ml.jobs.begin_cancel(name)

        return poll(
            read,
            lambda status: status in DONE,
            lambda status: f"Azure ML job {name}: {status}",
            heartbeat,
            poll_seconds=self.poll_seconds,
            max_poll_seconds=self.max_poll_seconds,
            cancel=cancel,
        )

    def _run_error(self, name: str) -> str:
        with azure_call(f"read the run details of {name}"):
            details = self.clients.ml.jobs._runs_operations.get_run_details(name)
        error = getattr(getattr(details, "error", None), "error", None)
        return str(error.message) if error is not None and error.message else "no reason given"

    def _failure_text(self, uri: str) -> str | None:
        if self.store.head(uri) is None:
            return None
        data, _ = self.store.read_bytes(uri)
        return data.decode(errors="replace").strip() or None
