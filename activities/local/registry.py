"""The local backend's `ModelRegistry` (activities/ports.py): MLflow's model registry.

`MlflowRegistry` is MLflow's own model registry. Embedded by default, on a local SQLite store:
tracking and registry at `sqlite:///<home>/mlflow.db`, artifacts under
`<home>/mlartifacts/<model>/` (browse it with `mlflow ui --backend-store-uri
sqlite:///.retrain/mlflow.db`). A team's own tracking server is used instead when MLflow's
standard variables say so: `MLFLOW_TRACKING_URI` (e.g. `http://mlflow:5000`; the server keeps the
artifacts, proxied or in its artifact root) and, when the registry lives elsewhere,
`MLFLOW_REGISTRY_URI` (default: the tracking URI, as in MLflow). Credentials for such a server
come from MLflow's own variables (`MLFLOW_TRACKING_TOKEN`, ...), never from a spec. For each
candidate it writes:

- an experiment per model (named like the model) and a run named and tagged by the loop id,
  with the lineage as tags, the training metrics, and the whole lineage as `lineage.json`;
- a logged model (`mlflow.sklearn` flavour, cloudpickle: the artifact is a joblib pickle that
  training produced, so a pickle-free format would add no safety) plus the exact training
  artifact as a run artifact `training/<file>` (its sha256 is the version tag);
- a registered model named like our model, and a version created in one call with all its
  lineage tags (`loop_id`, `trigger_origin`, `trigger_kinds`, `trigger_event_ids`, `spec_hash`,
  `parent_champion` when there is one, `artifact_sha256`, and the datasets: `dataset_hashes`
  (JSON, uri -> sha256), `dataset_files`, `dataset_hashes_sha256` (one fingerprint of them)),
  so a version is never half-registered; aliases `champion`, `challenger`, `previous-champion`.

Dataset uris are tag values, never keys: MLflow keys allow few characters (no `=`, as in
`date=2026-01-01`). Metric names MLflow refuses are logged with those characters as `_`.

Operations hold a thread lock and `<home>/mlflow.lock` (flock), so threads and worker processes
sharing a home never interleave. Registration is idempotent by loop id (a version tagged with it
is returned again); a run left RUNNING by a crashed attempt is marked FAILED before the retry
logs a fresh one. MLflow is only ever given explicit URIs (never its process-global one), and
its telemetry is switched off before it is imported. Loading needs the estimator's classes
importable (cloudpickle).
"""

from __future__ import annotations

import os

# Read by MLflow at import time: no telemetry, and only warnings from its own log handler.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

import fcntl
import hashlib
import json
import logging
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped, unused-ignore]
import mlflow.artifacts
import mlflow.sklearn
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.entities.model_registry import ModelVersion as MlflowVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.utils.validation import MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH, MAX_TAG_VAL_LENGTH

from activities.loop.registry import checked_loop_id, checked_model
from activities.ports import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, RegistryError
from activities.training_runner import sha256_file
from workflows.loop.models import (
    ModelVersion,
    PromoteRequest,
    Promotion,
    RegisterRequest,
    RejectRequest,
)

_NOT_IN_METRIC_NAMES = re.compile(r"[^\w\-. :/]")


class _DropPickleAdvice(logging.Filter):
    """MLflow warns on every pickled sklearn model; ours are pickles by construction."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pickle or cloudpickle format" not in record.getMessage()


logging.getLogger("mlflow.sklearn").addFilter(_DropPickleAdvice())
# MLflow's own use of deprecated SQLAlchemy APIs is not ours to act on.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\.")


TRACKING_URI_VARIABLE = "MLFLOW_TRACKING_URI"
REGISTRY_URI_VARIABLE = "MLFLOW_REGISTRY_URI"


class MlflowRegistry:
    """`tracking_uri` / `registry_uri`: where MLflow lives; by default `MLFLOW_TRACKING_URI` and
    `MLFLOW_REGISTRY_URI`, else the embedded SQLite store under `home`."""

    def __init__(
        self, home: Path, tracking_uri: str | None = None, registry_uri: str | None = None
    ) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home.resolve()
        embedded = f"sqlite:///{self.home / 'mlflow.db'}"
        self.uri = tracking_uri or os.environ.get(TRACKING_URI_VARIABLE) or embedded
        self.registry_uri = registry_uri or os.environ.get(REGISTRY_URI_VARIABLE) or self.uri
        # Only the embedded store keeps its artifacts under the home; a server has its own root.
        self.artifact_root: Path | None = (
            self.home / "mlartifacts" if self.uri == embedded else None
        )
        self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.registry_uri)
        self._thread_lock = threading.Lock()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One registry operation at a time, across threads and worker processes on this host."""
        with self._thread_lock, (self.home / "mlflow.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def register(self, request: RegisterRequest) -> ModelVersion:
        model, loop_id = checked_model(request.model), checked_loop_id(request.loop_id)
        with self._exclusive():
            found = self._version_of_loop(model, loop_id)
            if found is None:
                experiment_id = self._experiment(model)
                self._fail_abandoned_runs(experiment_id, loop_id)
                found = self._create_version(experiment_id, request)
            version = str(found.version)
            # A retry after promotion must not make the champion a challenger again.
            if self._aliases(model).get(CHAMPION) != version:
                self._client.set_registered_model_alias(model, CHALLENGER, version)
            return self._version(model, version)

    def champion(self, model: str) -> ModelVersion | None:
        with self._exclusive():
            version = self._aliases(checked_model(model)).get(CHAMPION)
            return None if version is None else self._version(model, version)

    def promote(self, request: PromoteRequest) -> Promotion:
        model, version = checked_model(request.model), request.version
        with self._exclusive():
            try:
                self._client.get_model_version(model, version)
            except MlflowException as exc:
                raise RegistryError(f"{model} has no version {version}: {exc.message}") from exc
            current = self._aliases(model).get(CHAMPION)
            # Each step is idempotent, so a retry after any of them converges.
            if current != version:
                if current is not None:
                    self._client.set_registered_model_alias(model, PREVIOUS_CHAMPION, current)
                self._client.set_registered_model_alias(model, CHAMPION, version)
            self._client.set_model_version_tag(model, version, "promoted_by", request.loop_id)
            aliases = self._aliases(model)
            if aliases.get(CHALLENGER) == version:
                self._client.delete_registered_model_alias(model, CHALLENGER)
            return Promotion(
                model=model, champion=version, previous_champion=aliases.get(PREVIOUS_CHAMPION)
            )

    def reject(self, request: RejectRequest) -> ModelVersion:
        model, version = checked_model(request.model), request.version
        with self._exclusive():
            try:
                self._client.set_model_version_tag(
                    model, version, "rejected", f"{request.loop_id}: {request.reason}"[:5000]
                )
            except MlflowException as exc:
                raise RegistryError(f"{model} has no version {version}: {exc.message}") from exc
            if self._aliases(model).get(CHALLENGER) == version:
                self._client.delete_registered_model_alias(model, CHALLENGER)
            found = self._client.get_model_version(model, version)
            return _ours(found, _aliases_of(self._aliases(model), version))

    def versions(self, model: str) -> list[ModelVersion]:
        model = checked_model(model)
        with self._exclusive():
            found = self._client.search_model_versions(f"name = '{model}'")
            aliases = self._aliases(model)
        ordered = sorted(found, key=lambda v: int(v.version))
        return [_ours(v, _aliases_of(aliases, str(v.version))) for v in ordered]

    def load(self, version: ModelVersion) -> Any:
        with self._exclusive():
            uri = self._client.get_model_version_download_uri(version.model, version.version)
        if self.artifact_root is not None:  # a local directory
            return mlflow.sklearn.load_model(uri)
        # A server's `mlflow-artifacts:` (or cloud) URI: fetched with our tracking URI, since
        # loading it directly would resolve it through MLflow's process-global one.
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=tmp, tracking_uri=self.uri
            )
            return mlflow.sklearn.load_model(local)

    def delete_model(self, model: str) -> None:
        """Forget a model: its registered versions and aliases, and its runs (demo resets)."""
        model = checked_model(model)
        with self._exclusive():
            try:
                self._client.delete_registered_model(model)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
            experiment = self._client.get_experiment_by_name(model)
            if experiment is None:
                return
            # Deleted runs leave the search results, so this pages through them all.
            while runs := self._client.search_runs([experiment.experiment_id]):
                for run in runs:
                    self._client.delete_run(run.info.run_id)

    # ---- helpers, called under the lock ----------------------------------------------------

    def _aliases(self, model: str) -> dict[str, str]:
        try:
            aliases: dict[str, str] = self._client.get_registered_model(model).aliases
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        return {alias: str(version) for alias, version in aliases.items()}

    def _version(self, model: str, version: str) -> ModelVersion:
        found = self._client.get_model_version(model, version)
        return _ours(found, _aliases_of(self._aliases(model), version))

    def _version_of_loop(self, model: str, loop_id: str) -> MlflowVersion | None:
        found = self._client.search_model_versions(
            f"name = '{model}' and tags.loop_id = '{loop_id}'"
        )
        return min(found, key=lambda v: int(v.version)) if found else None

    def _experiment(self, model: str) -> str:
        experiment = self._client.get_experiment_by_name(model)
        if experiment is None:
            location = None if self.artifact_root is None else (self.artifact_root / model).as_uri()
            return str(self._client.create_experiment(model, artifact_location=location))
        if experiment.lifecycle_stage == "deleted":
            self._client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)

    def _ensure_registered_model(self, model: str) -> None:
        try:
            self._client.create_registered_model(
                model, description="Registered by adaptive-retraining loops."
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _fail_abandoned_runs(self, experiment_id: str, loop_id: str) -> None:
        for run in self._client.search_runs(
            [experiment_id], f"tags.loop_id = '{loop_id}' and attributes.status = 'RUNNING'"
        ):
            self._client.set_terminated(run.info.run_id, status="FAILED")

    def _create_version(self, experiment_id: str, request: RegisterRequest) -> MlflowVersion:
        artifact = Path(request.artifact_path)
        if not artifact.is_file():
            raise RegistryError(f"the candidate's artifact {artifact} does not exist")
        if sha256_file(artifact) != request.artifact_sha256:
            raise RegistryError(f"{artifact} does not match its sha256 {request.artifact_sha256}")
        try:
            estimator = joblib.load(artifact)
        # Unpickling can raise nearly anything; none of it goes away on a retry.
        except Exception as exc:
            raise RegistryError(f"cannot load {artifact} with joblib: {exc!r}") from exc
        run = self._client.create_run(
            experiment_id, run_name=request.loop_id, tags=_run_tags(request)
        )
        run_id = run.info.run_id
        try:
            version = self._log_and_register(run_id, experiment_id, request, artifact, estimator)
        except BaseException:
            self._client.set_terminated(run_id, status="FAILED")
            raise
        self._client.set_terminated(run_id, status="FINISHED")
        return version

    def _log_and_register(
        self,
        run_id: str,
        experiment_id: str,
        request: RegisterRequest,
        artifact: Path,
        estimator: Any,
    ) -> MlflowVersion:
        client, lineage = self._client, request.lineage
        now = int(time.time() * 1000)
        metrics = [
            Metric(_NOT_IN_METRIC_NAMES.sub("_", name), value, now, 0)
            for name, value in sorted(lineage.training_metrics.items())
        ]
        try:
            client.log_batch(run_id, metrics=metrics)
        except MlflowException as exc:
            raise RegistryError(f"MLflow refused the training metrics: {exc.message}") from exc
        client.log_text(run_id, request.model_dump_json(indent=2), "lineage.json")
        logged = client.create_logged_model(
            experiment_id, name="model", source_run_id=run_id, tags={"loop_id": request.loop_id}
        )
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model"
            mlflow.sklearn.save_model(
                estimator,
                str(local),
                mlflow_model=Model(
                    artifact_path=logged.artifact_location,
                    model_uuid=logged.model_id,
                    run_id=run_id,
                    model_id=logged.model_id,
                ),
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                # Explicit requirements: inferring them would re-load the model in a subprocess.
                pip_requirements=mlflow.sklearn.get_default_pip_requirements(
                    include_cloudpickle=True
                ),
            )
            client.log_model_artifacts(logged.model_id, str(local))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        client.log_artifact(run_id, str(artifact), "training")
        self._ensure_registered_model(request.model)
        # Embedded: the artifact location, not `models:/<id>`, which MLflow's SQL registry
        # would resolve through the process-global tracking URI. A server resolves the logged
        # model's `models:/<id>` itself (and refuses its bare artifact location).
        embedded = self.artifact_root is not None
        return client.create_model_version(
            request.model,
            source=logged.artifact_location if embedded else f"models:/{logged.model_id}",
            model_id=None if embedded else logged.model_id,
            run_id=run_id,
            tags=_version_tags(request),
            description=f"Trained by {request.loop_id} ({lineage.trigger_origin}).",
        )


def _joined(values: list[str], limit: int) -> str:
    """Comma-joined, cut to `limit` characters with a count of what was left out."""
    text = ",".join(values)
    if len(text) <= limit:
        return text
    kept: list[str] = []
    size = 0
    for value in values:
        size += len(value) + 1
        if size > limit - 40:
            break
        kept.append(value)
    return ",".join([*kept, f"...(+{len(values) - len(kept)} more)"])


def _run_tags(request: RegisterRequest) -> dict[str, str]:
    lineage = request.lineage
    tags = {
        "loop_id": request.loop_id,
        "trigger_origin": lineage.trigger_origin,
        "trigger_kinds": ",".join(lineage.trigger_kinds),
        "trigger_event_ids": _joined(lineage.trigger_event_ids, MAX_TAG_VAL_LENGTH),
        "spec_hash": lineage.spec_hash,
        "dataset_files": str(len(lineage.dataset_hashes)),
        "dataset_hashes_sha256": hashlib.sha256(_json(lineage.dataset_hashes).encode()).hexdigest(),
        "artifact_sha256": request.artifact_sha256,
    }
    if lineage.parent_champion is not None:
        tags["parent_champion"] = lineage.parent_champion
    return tags


def _version_tags(request: RegisterRequest) -> dict[str, str]:
    hashes = request.lineage.dataset_hashes
    listing = _json(hashes)
    if len(listing) > MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH:
        listing = f"{len(hashes)} files, too many for a tag: see lineage.json in the run"
    return _run_tags(request) | {"dataset_hashes": listing}


def _json(hashes: dict[str, str]) -> str:
    return json.dumps(hashes, sort_keys=True, separators=(",", ":"))


def _aliases_of(aliases: dict[str, str], version: str) -> list[str]:
    return sorted(alias for alias, target in aliases.items() if target == version)


def _ours(version: MlflowVersion, aliases: list[str]) -> ModelVersion:
    return ModelVersion(
        model=version.name,
        version=str(version.version),
        source=f"models:/{version.name}/{version.version}",
        loop_id=version.tags.get("loop_id"),
        aliases=aliases,
        registered_at=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC),
    )
