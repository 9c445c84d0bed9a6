"""A registered version's folder on a cloud's object store, as the Azure ML and Vertex
registries keep it: `model.joblib` (the artifact) and `manifest.json` (its `RegisterRequest`,
with the artifact's sha256). Versions never change, so a folder is downloaded once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped, unused-ignore]

from activities.ports import ObjectStore, RegistryError
from activities.training_runner import sha256_file
from workflows.loop.models import RegisterRequest

ARTIFACT = "model.joblib"
MANIFEST = "manifest.json"


def upload_model_folder(store: ObjectStore, request: RegisterRequest, folder: str) -> None:
    """The candidate's artifact and manifest into `folder`, once the artifact is checked."""
    artifact = Path(request.artifact_path)
    if not artifact.is_file():
        raise RegistryError(f"the candidate's artifact {artifact} does not exist")
    if sha256_file(artifact) != request.artifact_sha256:
        raise RegistryError(f"{artifact} does not match its sha256 {request.artifact_sha256}")
    store.upload(artifact, f"{folder}/{ARTIFACT}")
    store.put_text(f"{folder}/{MANIFEST}", request.model_dump_json(indent=2))


def load_model_folder(store: ObjectStore, folder: str, directory: Path) -> Any:
    """The estimator in `folder`, downloaded into `directory` and checked against its manifest."""
    manifest = RegisterRequest.model_validate_json(
        _download(store, f"{folder}/{MANIFEST}", directory / MANIFEST).read_text()
    )
    artifact = _download(store, f"{folder}/{ARTIFACT}", directory / ARTIFACT)
    if sha256_file(artifact) != manifest.artifact_sha256:
        raise RegistryError(f"{folder}/{ARTIFACT} does not match its manifest")
    return joblib.load(artifact)


def _download(store: ObjectStore, uri: str, target: Path) -> Path:
    # Versions never change, so what was downloaded once (atomically) is reused.
    if not target.exists():
        store.download(uri, target)
    return target
