"""Vertex AI Model Registry as the `ModelRegistry`: one Vertex Model per model, a version each.

The Vertex Model's display name is our model's name (the oldest such Model when several exist);
each candidate is a version uploaded with `parent_model`, its `artifact_uri` a GCS directory
`<staging_bucket>/<prefix>/models/<model>/<loop_id>/` holding `model.joblib` (the training
artifact, under the name Vertex's prebuilt scikit-learn containers load) and `manifest.json`
(the RegisterRequest: lineage and the artifact's sha256). Versions carry labels (model, loop id,
`loop_key`, trigger, the settings' labels) and a description starting `loop_id=<loop id>;`,
which keeps the exact loop id that labels (lowercase, 63 characters) cannot.

Idempotent by loop id: a version labelled with the loop's `loop_key` is returned again.
Aliases `challenger`, `champion`, `previous-champion` are moved with mergeVersionAliases: first
removed from the version holding them (`-alias`), then added, each step safe to repeat, so a
retry after any step converges. Every call goes through `gcp_call`, on the GAPIC v1
ModelServiceClient (`GcpClients.models`).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import google.cloud.aiplatform_v1 as aiplatform_v1
from google.api_core import exceptions as gexc

from activities.cloud_registry import load_model_folder, upload_model_folder
from activities.gcp.clients import GcpClients
from activities.gcp.errors import gcp_call
from activities.gcp.gcs_store import GcsStore
from activities.gcp.training import LOOP_KEY, label_value, loop_key
from activities.loop.registry import checked_loop_id, checked_model
from activities.ports import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, RegistryError
from workflows.loop.models import (
    ModelVersion,
    PromoteRequest,
    Promotion,
    RegisterRequest,
    RejectRequest,
)
from workflows.spec.vertex import VertexSettings

_DESCRIBED_LOOP = re.compile(r"^loop_id=([\w.-]+);")
# How long an upload's operation is waited for: google-api-core's default polling deadline,
# which the aiplatform SDK's Model.upload waited. Over it: TimeoutError, retryable.
UPLOAD_TIMEOUT_SECONDS = 900.0


class VertexRegistry:
    def __init__(self, clients: GcpClients, settings: VertexSettings, home: Path) -> None:
        self.clients = clients
        self.settings = settings
        self.home = home
        self.store = GcsStore(clients)
        self._parents: dict[str, str] = {}
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    # ---- the Protocol ----------------------------------------------------------------------

    def register(self, request: RegisterRequest) -> ModelVersion:
        model, loop_id = checked_model(request.model), checked_loop_id(request.loop_id)
        existing = self._parent(model)
        found = None if existing is None else self._version_of_loop(existing, model, loop_id)
        if found is None:
            found = self._upload(request, existing)
        parent = _unversioned(found.name)
        version = str(found.version_id)
        self._move_alias(parent, CHALLENGER, version)
        return self._ours(model, parent, self._get(parent, version))

    def champion(self, model: str) -> ModelVersion | None:
        parent = self._parent(checked_model(model))
        if parent is None:
            return None
        holder = self._holder(parent, CHAMPION)
        return None if holder is None else self._ours(model, parent, holder)

    def promote(self, request: PromoteRequest) -> Promotion:
        model, version = checked_model(request.model), request.version
        parent = self._require_parent(model)
        target = self._get(parent, version)
        current = self._holder(parent, CHAMPION)
        current_version = None if current is None else str(current.version_id)
        if current_version != version:
            if current_version is not None:
                self._move_alias(parent, PREVIOUS_CHAMPION, current_version)
            self._move_alias(parent, CHAMPION, version)
        if CHALLENGER in target.version_aliases:
            self._merge(parent, version, [f"-{CHALLENGER}"])
        previous = self._holder(parent, PREVIOUS_CHAMPION)
        return Promotion(
            model=model,
            champion=version,
            previous_champion=None if previous is None else str(previous.version_id),
        )

    def reject(self, request: RejectRequest) -> ModelVersion:
        """Vertex versions have no approval status: a rejected one loses the `challenger`
        alias (the loop's audit record keeps why)."""
        model, version = checked_model(request.model), request.version
        parent = self._require_parent(model)
        if CHALLENGER in self._get(parent, version).version_aliases:
            self._merge(parent, version, [f"-{CHALLENGER}"])
        return self._ours(model, parent, self._get(parent, version))

    def versions(self, model: str) -> list[ModelVersion]:
        parent = self._parent(checked_model(model))
        if parent is None:
            return []
        return [self._ours(model, parent, found) for found in self._list(parent)]

    def load(self, version: ModelVersion) -> Any:
        with self._lock:
            if version.source in self._loaded:
                return self._loaded[version.source]
        with gcp_call(f"get Vertex model {version.source}"):
            found = self.clients.models.get_model(name=version.source)
        directory = self.home / "vertex-models" / version.model / str(found.version_id)
        estimator = load_model_folder(self.store, found.artifact_uri, directory)
        with self._lock:
            self._loaded[version.source] = estimator
        return estimator

    def resource_name(self, model: str, version: str) -> str:
        """The versioned Vertex Model name (`projects/../models/<id>@<version>`) to deploy."""
        return f"{self._require_parent(checked_model(model))}@{version}"

    # ---- Vertex calls ----------------------------------------------------------------------

    def _parent(self, model: str) -> str | None:
        """The Vertex Model holding our model's versions (None before its first version)."""
        with self._lock:
            if model in self._parents:
                return self._parents[model]
        request = {"parent": self.clients.vertex_parent, "filter": f'display_name="{model}"'}
        with gcp_call(f"list Vertex models named {model}"):
            found = list(self.clients.models.list_models(request=request))
        if not found:
            return None
        oldest = min(found, key=lambda m: (m.create_time, m.name))
        with self._lock:
            self._parents[model] = _unversioned(oldest.name)
        return self._parents[model]

    def _require_parent(self, model: str) -> str:
        parent = self._parent(model)
        if parent is None:
            raise RegistryError(f"{model} has no versions in the Vertex Model Registry")
        return parent

    def _list(self, parent: str, filter_text: str = "") -> list[aiplatform_v1.Model]:
        with gcp_call(f"list versions of {parent}"):
            found = list(
                self.clients.models.list_model_versions(
                    request={"name": parent, "filter": filter_text}
                )
            )
        return sorted(found, key=lambda m: int(m.version_id))

    def _get(self, parent: str, version: str) -> aiplatform_v1.Model:
        with gcp_call(f"get {parent}@{version}"):
            try:
                return self.clients.models.get_model(name=f"{parent}@{version}")
            except gexc.NotFound as error:
                raise RegistryError(f"{parent} has no version {version}: {error}") from error

    def _holder(self, parent: str, alias: str) -> aiplatform_v1.Model | None:
        return next((m for m in self._list(parent) if alias in m.version_aliases), None)

    def _merge(self, parent: str, version: str, changes: list[str]) -> None:
        with gcp_call(f"merge aliases {changes} into {parent}@{version}"):
            self.clients.models.merge_version_aliases(
                name=f"{parent}@{version}", version_aliases=changes
            )

    def _move_alias(self, parent: str, alias: str, version: str) -> None:
        holder = self._holder(parent, alias)
        if holder is not None and str(holder.version_id) == version:
            return
        if holder is not None:
            self._merge(parent, str(holder.version_id), [f"-{alias}"])
        self._merge(parent, version, [alias])

    def _version_of_loop(self, parent: str, model: str, loop_id: str) -> aiplatform_v1.Model | None:
        found = self._list(parent, f'labels.{LOOP_KEY}="{loop_key(model, loop_id)}"')
        return found[0] if found else None

    def _upload(self, request: RegisterRequest, parent: str | None) -> aiplatform_v1.Model:
        """Upload a version (a new Model when `parent` is None), as the aiplatform SDK's
        Model.upload did, and read it back."""
        directory = (
            f"{self.settings.staging_bucket}/{self.settings.prefix}"
            f"/models/{request.model}/{request.loop_id}"
        )
        upload_model_folder(self.store, request, directory)
        lineage = request.lineage
        labels = dict(self.settings.labels) | {
            "model": label_value(request.model),
            "loop_id": label_value(request.loop_id),
            LOOP_KEY: loop_key(request.model, request.loop_id),
            "trigger": label_value("+".join(lineage.trigger_kinds) or "none"),
        }
        description = (
            f"loop_id={request.loop_id}; trigger={lineage.trigger_origin}; "
            f"parent_champion={lineage.parent_champion or 'none'}; "
            f"spec_hash={lineage.spec_hash}; artifact_sha256={request.artifact_sha256}"
        )
        version = aiplatform_v1.Model(
            display_name=request.model,
            description="Registered by adaptive-retraining loops.",
            version_description=description,
            labels=labels,
            artifact_uri=directory,
            container_spec=aiplatform_v1.ModelContainerSpec(image_uri=self.settings.serving_image),
            # The first version is the default one; later ones are reached by version/alias.
            version_aliases=["default"] if parent is None else [],
        )
        with gcp_call(f"upload a version of {request.model} to the Vertex Model Registry"):
            operation = self.clients.models.upload_model(
                request=aiplatform_v1.UploadModelRequest(
                    parent=self.clients.vertex_parent, model=version, parent_model=parent
                )
            )
            response = operation.result(timeout=UPLOAD_TIMEOUT_SECONDS)  # type: ignore[no-untyped-call]
            uploaded = self.clients.models.get_model(
                name=f"{response.model}@{response.model_version_id}"
            )
        with self._lock:
            self._parents.setdefault(request.model, _unversioned(uploaded.name))
        return uploaded

    def _ours(self, model: str, parent: str, found: aiplatform_v1.Model) -> ModelVersion:
        described = _DESCRIBED_LOOP.match(found.version_description or "")
        loop_id = described.group(1) if described else found.labels.get("loop_id")
        version = str(found.version_id)
        return ModelVersion(
            model=model,
            version=version,
            source=f"{parent}@{version}",
            loop_id=loop_id,
            aliases=sorted(a for a in found.version_aliases if a != "default"),
            registered_at=found.version_create_time or None,
        )


def _unversioned(name: str) -> str:
    return name.partition("@")[0]
