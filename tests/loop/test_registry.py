"""The MLflow model registry on a local SQLite store: lineage, aliases, idempotency, loading.

One registry (one SQLite file) serves the whole module, since creating MLflow's schema takes a
second; every test registers its own model name. No test may open a network connection.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped, unused-ignore]
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.local.registry import MlflowRegistry, _joined
from activities.loop.registry import RegistryActivities
from activities.ports import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from activities.training_runner import sha256_file
from workflows.common.errors import ErrorType
from workflows.loop.models import Lineage, PromoteRequest, RegisterRequest

FEATURES = np.random.default_rng(1).normal(size=(200, 3))
# Keyed by uri, as the loop records them: characters MLflow refuses in keys.
DATASETS = {
    "/home/retrain/data/churn/labelled/date=2026-03-01/part-0.parquet": "a" * 64,
    "/home/retrain/runs/churn/retrain-churn-1/data/training.parquet": "b" * 64,
}
# pytest re-enables DeprecationWarnings per test; MLflow's use of deprecated SQLAlchemy is not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> MlflowRegistry:
    return MlflowRegistry(tmp_path_factory.mktemp("retrain-home"))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    labels = (FEATURES[:, 0] + FEATURES[:, 1] > 0).astype(int)
    path = tmp_path_factory.mktemp("training") / "model.joblib"
    joblib.dump(LogisticRegression().fit(FEATURES, labels), path)
    return path


@pytest.fixture
def model() -> str:
    return f"churn-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Refuse, and remember, every connection attempt other than a local socket file."""
    attempts: list[Any] = []
    connect = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> None:
        if sock.family == socket.AF_UNIX:
            return connect(sock, address)
        attempts.append(address)
        raise OSError(f"test refuses network access to {address}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield attempts
    assert attempts == []


def register_request(
    model: str, loop_id: str, artifact: Path, parent: str | None = None
) -> RegisterRequest:
    return RegisterRequest(
        model=model,
        loop_id=loop_id,
        artifact_path=str(artifact),
        artifact_sha256=sha256_file(artifact),
        lineage=Lineage(
            loop_id=loop_id,
            trigger_origin="drift-monitor",
            trigger_kinds=["drift", "data_arrived"],
            trigger_event_ids=["evt-1", "evt-2"],
            dataset_hashes=DATASETS,
            training_metrics={"accuracy": 0.91, "roc_auc": 0.95, "f1@0.5": 0.9},
            parent_champion=parent,
            spec_hash="c" * 64,
        ),
    )


def client(registry: MlflowRegistry) -> MlflowClient:
    return MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri)


def test_register_is_idempotent_by_loop_id(
    registry: MlflowRegistry, artifact: Path, model: str
) -> None:
    request = register_request(model, f"retrain-{model}-1", artifact)
    first = registry.register(request)
    assert registry.register(request) == first
    assert (first.version, first.aliases, first.loop_id) == ("1", [CHALLENGER], request.loop_id)
    assert first.source == f"models:/{model}/1"
    assert [v.version for v in registry.versions(model)] == ["1"]
    runs = client(registry).search_runs(
        [client(registry).get_experiment_by_name(model).experiment_id]  # type: ignore[union-attr]
    )
    assert len(runs) == 1


def test_version_carries_its_lineage(registry: MlflowRegistry, artifact: Path, model: str) -> None:
    request = register_request(model, f"retrain-{model}-2", artifact, parent="7")
    version = registry.register(request)
    mlflow = client(registry)
    stored = mlflow.get_model_version(model, version.version)
    assert stored.tags == {
        "loop_id": request.loop_id,
        "trigger_origin": "drift-monitor",
        "trigger_kinds": "drift,data_arrived",
        "trigger_event_ids": "evt-1,evt-2",
        "spec_hash": "c" * 64,
        "parent_champion": "7",
        "artifact_sha256": request.artifact_sha256,
        "dataset_files": "2",
        "dataset_hashes_sha256": hashlib.sha256(
            json.dumps(DATASETS, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest(),
        "dataset_hashes": json.dumps(DATASETS, sort_keys=True, separators=(",", ":")),
    }
    assert json.loads(stored.tags["dataset_hashes"]) == DATASETS
    run = mlflow.get_run(stored.run_id)  # type: ignore[arg-type]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == request.loop_id
    assert run.data.metrics == {"accuracy": 0.91, "roc_auc": 0.95, "f1_0.5": 0.9}
    assert run.data.tags["dataset_hashes_sha256"] == stored.tags["dataset_hashes_sha256"]
    # The whole lineage, and the exact bytes training produced, next to the MLflow model.
    lineage = mlflow.download_artifacts(run.info.run_id, "lineage.json")
    assert RegisterRequest.model_validate_json(Path(lineage).read_text()) == request
    logged = [a.path for a in mlflow.list_artifacts(run.info.run_id, "training")]
    assert logged == ["training/model.joblib"]


def test_aliases_through_two_promotions(
    registry: MlflowRegistry, artifact: Path, model: str
) -> None:
    assert registry.champion(model) is None
    first = registry.register(register_request(model, f"retrain-{model}-1", artifact))
    promotion = registry.promote(PromoteRequest(model=model, version="1", loop_id=first.loop_id))
    assert (promotion.champion, promotion.previous_champion) == ("1", None)
    assert registry.champion(model) == first.model_copy(update={"aliases": [CHAMPION]})

    request = register_request(model, f"retrain-{model}-2", artifact, parent="1")
    second = registry.register(request)
    assert (second.version, second.aliases) == ("2", [CHALLENGER])
    promote = PromoteRequest(model=model, version="2", loop_id=request.loop_id)
    promotion = registry.promote(promote)
    assert (promotion.champion, promotion.previous_champion) == ("2", "1")
    assert registry.promote(promote) == promotion
    assert {v.version: v.aliases for v in registry.versions(model)} == {
        "1": [PREVIOUS_CHAMPION],
        "2": [CHAMPION],
    }
    # A late retry of the registration must not make the champion a challenger again.
    assert registry.register(request).aliases == [CHAMPION]


def test_load_returns_the_fitted_estimator(
    registry: MlflowRegistry, artifact: Path, model: str
) -> None:
    version = registry.register(register_request(model, f"retrain-{model}-1", artifact))
    loaded = registry.load(version)
    np.testing.assert_array_equal(
        loaded.predict_proba(FEATURES), joblib.load(artifact).predict_proba(FEATURES)
    )


def test_concurrent_registrations_of_one_loop_make_one_version(
    registry: MlflowRegistry, artifact: Path, model: str
) -> None:
    request = register_request(model, f"retrain-{model}-1", artifact)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(registry.register(request).version))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["1"] * 4
    assert len(registry.versions(model)) == 1


def test_a_failed_attempt_leaves_no_version_and_the_retry_registers_once(
    registry: MlflowRegistry, artifact: Path, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = register_request(model, f"retrain-{model}-1", artifact)
    with monkeypatch.context() as patched:

        def crash(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("worker lost its disk")

        patched.setattr(registry._client, "create_model_version", crash)
        with pytest.raises(RuntimeError):
            registry.register(request)
    assert registry.versions(model) == []
    # A worker killed mid-registration leaves a RUNNING run: the retry closes it as FAILED.
    mlflow = client(registry)
    experiment_id = mlflow.get_experiment_by_name(model).experiment_id  # type: ignore[union-attr]
    abandoned = mlflow.create_run(experiment_id, tags={"loop_id": request.loop_id})

    version = registry.register(request)
    assert version.version == "1"
    assert len(registry.versions(model)) == 1
    statuses = sorted(r.info.status for r in mlflow.search_runs([experiment_id]))
    assert statuses == ["FAILED", "FAILED", "FINISHED"]
    assert mlflow.get_run(abandoned.info.run_id).info.status == "FAILED"


def test_activities(registry: MlflowRegistry, artifact: Path, model: str) -> None:
    env, activities = ActivityEnvironment(), RegistryActivities(registry)
    assert env.run(activities.champion_version, model) is None
    request = register_request(model, f"retrain-{model}-1", artifact)
    version = env.run(activities.register_candidate, request)
    promote = PromoteRequest(model=model, version=version.version, loop_id=request.loop_id)
    assert env.run(activities.promote_candidate, promote).champion == version.version
    champion = env.run(activities.champion_version, model)
    assert champion is not None and champion.aliases == [CHAMPION]
    assert client(registry).get_model_version(model, "1").tags["promoted_by"] == request.loop_id


@pytest.mark.parametrize("problem", ["tampered artifact", "unknown version"])
def test_permanent_errors_are_non_retryable(
    registry: MlflowRegistry, artifact: Path, model: str, problem: str
) -> None:
    env, activities = ActivityEnvironment(), RegistryActivities(registry)
    with pytest.raises(ApplicationError) as raised:
        if problem == "tampered artifact":
            request = register_request(model, f"retrain-{model}-1", artifact)
            tampered = request.model_copy(update={"artifact_sha256": "0" * 64})
            env.run(activities.register_candidate, tampered)
        else:
            promote = PromoteRequest(model=model, version="9", loop_id=f"retrain-{model}-9")
            env.run(activities.promote_candidate, promote)
    assert (raised.value.type, raised.value.non_retryable) == (ErrorType.REGISTRY, True)
    assert registry.versions(model) == []


def test_delete_model_forgets_versions_and_runs(
    registry: MlflowRegistry, artifact: Path, model: str
) -> None:
    registry.delete_model(model)  # nothing registered yet: a no-op
    request = register_request(model, f"retrain-{model}-1", artifact)
    registry.register(request)
    registry.delete_model(model)
    assert registry.versions(model) == []
    assert registry.champion(model) is None
    experiment = client(registry).get_experiment_by_name(model)
    assert experiment is not None
    assert client(registry).search_runs([experiment.experiment_id]) == []
    # The same loop id registers afresh after a reset.
    assert registry.register(request).version == "1"


def test_long_tag_values_are_cut_with_a_count() -> None:
    assert _joined(["evt-1", "evt-2"], 100) == "evt-1,evt-2"
    cut = _joined([f"evt-{i:04d}" for i in range(100)], 200)
    assert len(cut) <= 200
    assert cut.startswith("evt-0000,evt-0001,") and cut.endswith(",evt-0016,...(+83 more)")
