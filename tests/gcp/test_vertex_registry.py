"""VertexRegistry through the GAPIC v1 ModelServiceClient (versions, aliases) on the local fake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped, unused-ignore]
from temporalio.exceptions import ApplicationError

from activities.cloud_registry import ARTIFACT, MANIFEST
from activities.gcp.registry import VertexRegistry
from activities.gcp.training import LOOP_KEY, loop_key
from activities.ports import RegistryError
from activities.training_runner import sha256_file
from tests.support.vertex_fake import models, storage
from tests.support.vertex_fake.server import RunningFake
from tests.support.vertex_harness import BUCKET, fake_clients
from workflows.common.errors import ErrorType
from workflows.loop.models import Lineage, PromoteRequest, RegisterRequest
from workflows.spec.vertex import VertexSettings

PARENT = "projects/retrain-tests/locations/us-central1"


def settings() -> VertexSettings:
    values: dict[str, Any] = {
        "project": "retrain-tests",
        "staging_bucket": f"gs://{BUCKET}",
        "training_image": "us-docker.pkg.dev/retrain-tests/images/retrain:1",
        "endpoint_name": "churn",
        "serving_image": "us-docker.pkg.dev/retrain-tests/images/serve:1",
        "labels": {"team": "growth"},
    }
    return VertexSettings.model_validate(values)


@pytest.fixture
def registry(vertex: RunningFake, tmp_path: Path) -> VertexRegistry:
    return VertexRegistry(fake_clients(vertex), settings(), tmp_path / "home")


def candidate(tmp_path: Path, loop_id: str, seed: int = 0) -> RegisterRequest:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(60, 3))
    estimator = LogisticRegression().fit(features, (features[:, 0] > 0).astype(int))
    artifact = tmp_path / loop_id / "model.joblib"
    artifact.parent.mkdir(parents=True)
    joblib.dump(estimator, artifact)
    return RegisterRequest(
        model="churn",
        loop_id=loop_id,
        artifact_path=str(artifact),
        artifact_sha256=sha256_file(artifact),
        lineage=Lineage(
            loop_id=loop_id,
            trigger_origin="drift-monitor",
            trigger_kinds=["drift", "data_arrived"],
            trigger_event_ids=["evt-1"],
            dataset_hashes={"gs://b/train.parquet": "a" * 64},
            training_metrics={"accuracy": 0.9},
            spec_hash="c" * 64,
        ),
    )


def stored_versions(vertex: RunningFake) -> list[dict[str, Any]]:
    return sorted(vertex.state.table(models.MODELS).values(), key=lambda m: int(m["versionId"]))


def test_register_uploads_versions_of_one_model_idempotently(
    vertex: RunningFake, registry: VertexRegistry, tmp_path: Path
) -> None:
    first = registry.register(candidate(tmp_path, "Retrain.Churn-1"))
    assert first.version == "1" and first.loop_id == "Retrain.Churn-1"
    assert first.aliases == ["challenger"]
    assert first.source.startswith(f"{PARENT}/models/") and first.source.endswith("@1")
    assert registry.register(candidate(tmp_path / "again", "Retrain.Churn-1")) == first

    second = registry.register(candidate(tmp_path, "retrain-churn-2", seed=1))
    assert second.version == "2" and second.aliases == ["challenger"]
    assert second.source == f"{first.source.removesuffix('@1')}@2"
    assert registry.resource_name("churn", "2") == second.source

    [one, two] = stored_versions(vertex)
    assert one["displayName"] == two["displayName"] == "churn"
    assert one["versionAliases"] == ["default"]  # challenger moved to version 2
    assert one["containerSpec"]["imageUri"] == settings().serving_image
    assert one["labels"] == {
        "team": "growth",
        "model": "churn",
        "loop_id": "retrain-churn-1",
        LOOP_KEY: loop_key("churn", "Retrain.Churn-1"),
        "trigger": "drift-data_arrived",
    }
    assert two["versionDescription"].startswith("loop_id=retrain-churn-2; trigger=drift-monitor")
    directory = "adaptive-retraining/models/churn/retrain-churn-2"
    assert two["artifactUri"] == f"gs://{BUCKET}/{directory}"
    manifest = storage.get_object(vertex.state, BUCKET, f"{directory}/{MANIFEST}")
    assert manifest is not None and json.loads(manifest)["loop_id"] == "retrain-churn-2"
    assert storage.get_object(vertex.state, BUCKET, f"{directory}/{ARTIFACT}") is not None
    assert [v.version for v in registry.versions("churn")] == ["1", "2"]


def test_promote_moves_champion_and_previous_champion_idempotently(
    registry: VertexRegistry, tmp_path: Path
) -> None:
    assert registry.champion("churn") is None
    first = registry.register(candidate(tmp_path, "retrain-churn-1"))
    promoted = registry.promote(PromoteRequest(model="churn", version="1", loop_id="l1"))
    assert promoted.champion == "1" and promoted.previous_champion is None
    champion = registry.champion("churn")
    assert champion is not None and champion.version == "1" and champion.aliases == ["champion"]

    registry.register(candidate(tmp_path, "retrain-churn-2", seed=1))
    request = PromoteRequest(model="churn", version="2", loop_id="l2")
    promoted = registry.promote(request)
    assert promoted.champion == "2" and promoted.previous_champion == "1"
    assert registry.promote(request) == promoted
    by_version = {v.version: v.aliases for v in registry.versions("churn")}
    assert by_version == {"1": ["previous-champion"], "2": ["champion"]}
    assert first.source.endswith("@1")


def test_load_returns_the_estimator_and_checks_its_hash(
    vertex: RunningFake, registry: VertexRegistry, tmp_path: Path
) -> None:
    version = registry.register(candidate(tmp_path, "retrain-churn-1"))
    estimator = registry.load(version)
    assert estimator.predict(np.zeros((1, 3))).shape == (1,)
    assert registry.load(version) is estimator

    tampered = VertexRegistry(fake_clients(vertex), settings(), tmp_path / "other-home")
    directory = "adaptive-retraining/models/churn/retrain-churn-1"
    storage.put_object(vertex.state, BUCKET, f"{directory}/{ARTIFACT}", b"not the model")
    with pytest.raises(RegistryError, match="does not match its manifest"):
        tampered.load(version)


def test_unknown_version_and_bad_artifact_are_registry_errors(
    registry: VertexRegistry, tmp_path: Path
) -> None:
    with pytest.raises(RegistryError, match="no versions"):
        registry.promote(PromoteRequest(model="churn", version="1", loop_id="l1"))
    registry.register(candidate(tmp_path, "retrain-churn-1"))
    with pytest.raises(RegistryError, match="has no version 9"):
        registry.promote(PromoteRequest(model="churn", version="9", loop_id="l1"))
    bad = candidate(tmp_path, "retrain-churn-2").model_copy(update={"artifact_sha256": "0" * 64})
    with pytest.raises(RegistryError, match="does not match its sha256"):
        registry.register(bad)


def test_throttling_and_denial_are_translated(
    vertex: RunningFake, registry: VertexRegistry, tmp_path: Path
) -> None:
    vertex.state.faults.append((f"POST /v1/{PARENT}/models:upload", 429, "Quota exceeded"))
    with pytest.raises(ApplicationError) as raised:
        registry.register(candidate(tmp_path, "retrain-churn-1"))
    assert raised.value.type == ErrorType.GCP_UNAVAILABLE and not raised.value.non_retryable
    assert registry.register(candidate(tmp_path / "retry", "retrain-churn-1")).version == "1"

    message = "Permission 'aiplatform.models.list' denied"
    vertex.state.faults.append((f"GET /v1/{PARENT}/models", 403, message))
    fresh = VertexRegistry(fake_clients(vertex), settings(), tmp_path / "fresh")
    with pytest.raises(ApplicationError) as raised:
        fresh.champion("churn")
    assert raised.value.type == ErrorType.GCP_REQUEST_REJECTED and message in str(raised.value)
