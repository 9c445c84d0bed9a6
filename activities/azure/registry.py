"""The Azure ML model registry as the `ModelRegistry`: one model (our model's name), a version
per registered candidate.

Each version's path is a folder on the workspace datastore, `<prefix>/models/<model>/<loop_id>/`,
holding `model.joblib` (the training artifact) and `manifest.json` (the RegisterRequest:
lineage and the artifact's sha256); Azure ML numbers the versions. Tags carry the loop id
(`retrain.loop`), the trigger, the settings' chargeback tags, and our aliases: Azure ML has no
version aliases (its `latest` label is by version number), so each alias is a tag,

    champion            retrain.alias.champion = "true"  (and stage "Production")
    challenger          retrain.alias.challenger = "true"
    previous-champion   retrain.alias.previous-champion = "true"
    (rejected)          retrain.rejected = <reason>      (and stage "Archived")

held by at most one version. Moving an alias removes the tag from its holder first, then sets
it on the new version; each step is safe to repeat, so a retry after any step converges.
Idempotent by loop id: a version tagged with the loop id is returned again.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from activities.azure.blob_store import BlobStore
from activities.azure.clients import AzureClients
from activities.azure.errors import azure_call
from activities.azure.training import LOOP_TAG
from activities.cloud_registry import load_model_folder, upload_model_folder
from activities.loop.registry import checked_loop_id, checked_model
from activities.ports import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION, RegistryError
from workflows.loop.models import (
    ModelVersion,
    PromoteRequest,
    Promotion,
    RegisterRequest,
    RejectRequest,
)
from workflows.spec.azure import AzureSettings

ALIAS_TAG = "retrain.alias."
REJECTED_TAG = "retrain.rejected"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)
_STAGES = {CHAMPION: "Production"}


def alias_tag(alias: str) -> str:
    return f"{ALIAS_TAG}{alias}"


class AzureRegistry:
    def __init__(self, clients: AzureClients, settings: AzureSettings, home: Path) -> None:
        self.clients = clients
        self.settings = settings
        self.home = home
        self.store = BlobStore(clients)
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    # ---- the Protocol ------------------------------------------------------------------------

    def register(self, request: RegisterRequest) -> ModelVersion:
        model, loop_id = checked_model(request.model), checked_loop_id(request.loop_id)
        found = next((v for v in self._list(model) if v.tags.get(LOOP_TAG) == loop_id), None)
        if found is None:
            found = self._create(request)
        self._move_alias(model, CHALLENGER, str(found.version))
        return self._ours(model, self._get(model, str(found.version)))

    def champion(self, model: str) -> ModelVersion | None:
        holder = self._holder(checked_model(model), CHAMPION)
        return None if holder is None else self._ours(model, holder)

    def promote(self, request: PromoteRequest) -> Promotion:
        model, version = checked_model(request.model), request.version
        self._get(model, version)  # refused when there is no such version
        current = self._holder(model, CHAMPION)
        if current is not None and str(current.version) != version:
            self._move_alias(model, PREVIOUS_CHAMPION, str(current.version))
        self._move_alias(model, CHAMPION, version)
        self._untag(model, version, alias_tag(CHALLENGER))
        previous = self._holder(model, PREVIOUS_CHAMPION)
        return Promotion(
            model=model,
            champion=version,
            previous_champion=None if previous is None else str(previous.version),
        )

    def reject(self, request: RejectRequest) -> ModelVersion:
        model, version = checked_model(request.model), request.version
        found = self._get(model, version)
        if alias_tag(CHALLENGER) in found.tags or found.tags.get(REJECTED_TAG) != request.reason:
            found.tags.pop(alias_tag(CHALLENGER), None)
            found.tags[REJECTED_TAG] = request.reason
            if alias_tag(CHAMPION) not in found.tags:
                found.stage = "Archived"
            self._update(found)
        return self._ours(model, self._get(model, version))

    def versions(self, model: str) -> list[ModelVersion]:
        model = checked_model(model)
        return [self._ours(model, found) for found in self._list(model)]

    def load(self, version: ModelVersion) -> Any:
        with self._lock:
            if version.source in self._loaded:
                return self._loaded[version.source]
        folder = self._folder(version.model, self._get(version.model, version.version))
        directory = self.home / "azure-models" / version.model / version.version
        estimator = load_model_folder(self.store, folder, directory)
        with self._lock:
            self._loaded[version.source] = estimator
        return estimator

    # ---- Azure ML calls ----------------------------------------------------------------------

    def _list(self, model: str) -> list[Any]:
        with azure_call(f"list versions of Azure ML model {model}"):
            try:
                found = list(self.clients.ml.models.list(name=model))
            except ResourceNotFoundError:
                return []
        return sorted(found, key=lambda m: int(m.version))

    def _get(self, model: str, version: str) -> Any:
        with azure_call(f"get Azure ML model {model}:{version}"):
            try:
                return self.clients.ml.models.get(model, version=version)
            except ResourceNotFoundError as error:
                raise RegistryError(f"{model} has no version {version}: {error}") from error

    def _update(self, found: Any) -> None:
        with azure_call(f"update Azure ML model {found.name}:{found.version}"):
            self.clients.ml.models.create_or_update(found)

    def _holder(self, model: str, alias: str) -> Any | None:
        return next((m for m in self._list(model) if alias_tag(alias) in m.tags), None)

    def _untag(self, model: str, version: str, tag: str) -> None:
        found = self._get(model, version)
        if tag in found.tags:
            del found.tags[tag]
            self._update(found)

    def _move_alias(self, model: str, alias: str, version: str) -> None:
        for holder in self._list(model):
            if alias_tag(alias) in holder.tags and str(holder.version) != version:
                del holder.tags[alias_tag(alias)]
                if alias in _STAGES:
                    holder.stage = "Development"
                self._update(holder)
        target = self._get(model, version)
        if alias_tag(alias) not in target.tags:
            target.tags[alias_tag(alias)] = "true"
            if alias in _STAGES:
                target.stage = _STAGES[alias]
            self._update(target)

    def _create(self, request: RegisterRequest) -> Any:
        from azure.ai.ml.entities import Model

        path = f"{self.settings.prefix}/models/{request.model}/{request.loop_id}"
        upload_model_folder(self.store, request, f"az://{self.settings.container}/{path}")
        lineage = request.lineage
        tags = {
            **self.settings.tags,
            LOOP_TAG: request.loop_id,
            "retrain.trigger": "+".join(lineage.trigger_kinds) or "none",
            "retrain.parent_champion": lineage.parent_champion or "none",
        }
        with azure_call(f"register a version of {request.model} in Azure ML"):
            return self.clients.ml.models.create_or_update(
                Model(
                    name=request.model,
                    path=self.settings.datastore_uri(f"{path}/"),
                    type="custom_model",
                    description=f"Registered by adaptive-retraining loop {request.loop_id}.",
                    tags=tags,
                    properties={
                        "retrain.artifact_sha256": request.artifact_sha256,
                        "retrain.spec_hash": lineage.spec_hash,
                    },
                )
            )

    def _folder(self, model: str, found: Any) -> str:
        """The version's folder as an az:// URI (from its datastore path)."""
        path = str(found.path)
        marker = "/paths/"
        if marker not in path:
            raise RegistryError(f"{model}:{found.version} is not on a datastore: {path}")
        return f"az://{self.settings.container}/{path.split(marker, 1)[1].rstrip('/')}"

    def _ours(self, model: str, found: Any) -> ModelVersion:
        tags: dict[str, str] = dict(found.tags or {})
        created = getattr(found.creation_context, "created_at", None)
        version = str(found.version)
        return ModelVersion(
            model=model,
            version=version,
            source=f"azureml:{model}:{version}",
            loop_id=tags.get(LOOP_TAG),
            aliases=sorted(a for a in ALIASES if alias_tag(a) in tags),
            registered_at=created if isinstance(created, datetime) else None,
        )
