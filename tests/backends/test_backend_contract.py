"""One contract, every backend of the registry: the same tests run unchanged against each.

Each backend is built the way the worker builds it (the registry's builder) from a registered
spec: the local one on real files, MLflow and a live local endpoint; SageMaker on moto's server
(a hook plays the training container, a shim fills moto's UpdateEndpoint gap); Vertex on the
local fake of its REST APIs; Azure ML on the local Azure fake, which the real SDKs reach through a
loopback transport (a hook plays the command job's container). A backend added to the registry
needs a harness in `HARNESSES`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import numpy as np
import pytest

from activities.aws.s3_store import S3Store
from activities.backends import CloudConnections, builder_of
from activities.drift.performance_window import read_labelled_window
from activities.gcp.gcs_store import GcsStore
from activities.local.capture import capture_dir
from activities.loop.data_window import resolve_uri, select_data_window
from activities.loop.evaluation import read_labelled_set
from activities.ports import Backend, EndpointUnavailable
from activities.rollout.deployment import live_split
from activities.rollout.window import read_window
from activities.specs import SpecStore
from serving.config import EndpointConfig
from starters.demo.synthetic import PRE_DRIFT_FUNCTION
from starters.demo.traffic import RowSource
from tests.support.aws_harness import FAKE_ACCESS_KEY, FAKE_SECRET_KEY, REGION, Moto
from tests.support.cloud_data import BUCKET, upload_dataset
from tests.support.cloud_traffic import (
    AzureTraffic,
    Call,
    EndpointTraffic,
    LocalTraffic,
    SageMakerTraffic,
    VertexTraffic,
    calls_from,
)
from tests.support.endpoint_harness import running_endpoint
from tests.support.loop_harness import write_dataset
from tests.support.sagemaker_container import ContainerEmulator
from tests.support.vertex_fake import storage as vertex_storage
from tests.support.vertex_fake.server import RunningFake
from tests.support.vertex_harness import ContainerEmulator as VertexContainer
from tests.support.vertex_harness import fake_clients, fake_connections
from workflows.loop.models import (
    DataWindowRequest,
    Lineage,
    PromoteRequest,
    RegisterRequest,
    RejectRequest,
    TrainingJob,
    TrainingRequest,
    TrainingResult,
)
from workflows.rollout.models import (
    CanaryPolicy,
    CanaryRequest,
    CheckName,
    EndpointState,
    Outcome,
    TrafficChange,
    WindowRef,
)
from workflows.rollout.rules import canary_verdict
from workflows.spec.backends import BACKEND_NAMES, BACKENDS
from workflows.spec.models import ModelSpec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.*")

MODEL = "contract-credit"
TODAY = datetime.now(UTC).date()


@dataclass
class Contract:
    backend: Backend
    spec: ModelSpec
    home: Path
    endpoint_url: str
    # The loop's training and validation sets, as the data window wrote them.
    train_path: str
    validation_path: str
    # The endpoint's callers and the model's ground truth, as the platform records them.
    traffic: EndpointTraffic


def prepared(home: Path, spec: ModelSpec) -> tuple[str, str]:
    window = select_data_window(
        home,
        DataWindowRequest(
            loop_id="retrain-contract-credit-0",
            spec=spec,
            as_of=datetime.combine(TODAY, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12),
        ),
    )
    assert window.training_set is not None and window.holdout_set is not None
    return window.training_set.uri, window.holdout_set.uri


Harness = Callable[[pytest.FixtureRequest, Path, ModelSpec, str, str], Iterator[Contract]]


@pytest.fixture(params=BACKEND_NAMES)
def contract(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Contract]:
    home = tmp_path / "home"
    local = write_dataset(home, MODEL, TODAY)
    train, validation = prepared(home, local)
    yield from HARNESSES[request.param](request, home, local, train, validation)


def build(spec: ModelSpec, home: Path, connections: CloudConnections) -> Backend:
    """The backend as the worker builds it: the registry's builder for the spec's backend."""
    return builder_of(spec.backend)(spec, home, connections)


def local_contract(
    request: pytest.FixtureRequest, home: Path, local: ModelSpec, train: str, validation: str
) -> Iterator[Contract]:
    SpecStore(home).register(local)
    with running_endpoint(EndpointConfig(home=home, model=MODEL, seed=1)) as url:
        backend = build(local, home, CloudConnections())
        yield Contract(backend, local, home, url, train, validation, LocalTraffic(url))


def sagemaker_contract(
    request: pytest.FixtureRequest, home: Path, local: ModelSpec, train: str, validation: str
) -> Iterator[Contract]:
    moto: Moto = request.getfixturevalue("moto")
    request.getfixturevalue("moto_gaps")
    session = boto3.Session(
        aws_access_key_id=FAKE_ACCESS_KEY, aws_secret_access_key=FAKE_SECRET_KEY, region_name=REGION
    )
    clients = moto.clients()
    clients.s3.create_bucket(Bucket=BUCKET)
    ContainerEmulator(s3=clients.s3).attach_session(session, clients.sagemaker)
    spec = upload_dataset(S3Store(clients), home, local, "s3")
    SpecStore(home).register(spec)
    connections = CloudConnections(
        aws_endpoint_url=moto.endpoint_url, aws_session=session, poll_seconds=0.05
    )
    backend = build(spec, home, connections)
    assert spec.sagemaker is not None
    traffic = SageMakerTraffic(clients, spec.sagemaker, spec, backend.registry)
    yield Contract(backend, spec, home, "", train, validation, traffic)


def vertex_contract(
    request: pytest.FixtureRequest, home: Path, local: ModelSpec, train: str, validation: str
) -> Iterator[Contract]:
    fake: RunningFake = request.getfixturevalue("vertex")
    vertex_storage.create_bucket(fake.state, BUCKET)
    VertexContainer(fake.state)
    clients = fake_clients(fake)
    spec = upload_dataset(GcsStore(clients), home, local, "gs")
    SpecStore(home).register(spec)
    backend = build(spec, home, fake_connections(fake))
    assert spec.vertex is not None
    traffic = VertexTraffic(fake.state, clients, spec.vertex, spec, backend.registry)
    yield Contract(backend, spec, home, "", train, validation, traffic)


def azure_contract(
    request: pytest.FixtureRequest, home: Path, local: ModelSpec, train: str, validation: str
) -> Iterator[Contract]:
    from activities.azure.blob_store import BlobStore
    from tests.support.azure_harness import ContainerEmulator as AzureContainer
    from tests.support.azure_harness import fake_clients as azure_clients
    from tests.support.azure_harness import fake_connections as azure_connections
    from tests.support.cloud_data import azure_settings
    from workflows.spec.azure import AzureSettings

    fake = request.getfixturevalue("azure")
    AzureContainer(fake.state)
    clients = azure_clients(fake, AzureSettings.model_validate(azure_settings()))
    spec = upload_dataset(BlobStore(clients), home, local, "az")
    SpecStore(home).register(spec)
    backend = build(spec, home, azure_connections(fake))
    assert spec.azure is not None
    traffic = AzureTraffic(fake.state, clients, spec.azure, spec, backend.registry)
    yield Contract(backend, spec, home, "", train, validation, traffic)


HARNESSES: dict[str, Harness] = {
    "local": local_contract,
    "sagemaker": sagemaker_contract,
    "vertex": vertex_contract,
    "azure": azure_contract,
}


def test_every_registered_backend_has_a_harness_and_a_spec_field() -> None:
    assert set(HARNESSES) == set(BACKEND_NAMES)
    for backend in BACKENDS:
        if backend.settings is not None:
            field = ModelSpec.model_fields.get(backend.name)
            assert field is not None, f"ModelSpec needs a field {backend.name!r}"
            assert backend.settings in typing.get_args(field.annotation)


def job(
    contract: Contract, loop_id: str, seed: int = 0, entrypoint: str | None = None
) -> TrainingJob:
    spec = contract.spec
    return TrainingJob(
        entrypoint=entrypoint or spec.training.entrypoint,
        request=TrainingRequest(
            model=spec.name,
            loop_id=loop_id,
            task=spec.task.value,
            train_path=contract.train_path,
            validation_path=contract.validation_path,
            features=spec.feature_names,
            categorical_features=[f.name for f in spec.features if f.kind.value == "categorical"],
            label=spec.label,
            hyperparameters={"estimator": "logistic_regression", "C": 1.0 + seed},
            output_dir=f"runs/{spec.name}/{loop_id}/training",
            seed=seed,
        ),
        timeout_seconds=600,
        tags={"model": spec.name, "loop-id": loop_id, "trigger": "manual"},
        parameters={"trigger_type": "manual", "event_count": "1"},
    )


def register_request(contract: Contract, loop_id: str, trained: TrainingResult) -> RegisterRequest:
    return RegisterRequest(
        model=contract.spec.name,
        loop_id=loop_id,
        artifact_path=trained.artifact_path,
        artifact_sha256=trained.artifact_sha256,
        lineage=Lineage(
            loop_id=loop_id,
            trigger_origin="manual trigger (contract test)",
            trigger_kinds=["manual"],
            trigger_event_ids=["contract-1"],
            dataset_hashes={contract.train_path: "0" * 64},
            training_metrics=trained.metrics,
            spec_hash=contract.spec.content_hash(),
        ),
    )


def heartbeat(progress: str) -> None:
    """The activity's heartbeat, outside an activity: progress text is all it gets."""
    assert progress


def test_training_runs_once_per_loop_id(contract: Contract) -> None:
    first = contract.backend.training.train(job(contract, "retrain-contract-credit-1"), heartbeat)
    again = contract.backend.training.train(job(contract, "retrain-contract-credit-1"), heartbeat)

    assert first.backend == contract.backend.name or first.backend.startswith("local")
    assert not first.reused and again.reused
    assert again.artifact_sha256 == first.artifact_sha256
    assert Path(first.artifact_path).is_file()
    assert {"accuracy", "roc_auc"} <= set(first.metrics)


def test_the_registry_registers_once_and_promotes(contract: Contract) -> None:
    registry = contract.backend.registry
    assert registry.champion(MODEL) is None
    trained = contract.backend.training.train(job(contract, "retrain-contract-credit-1"), heartbeat)
    first = registry.register(register_request(contract, "retrain-contract-credit-1", trained))
    assert (
        registry.register(register_request(contract, "retrain-contract-credit-1", trained)) == first
    )
    assert first.loop_id == "retrain-contract-credit-1"

    promoted = registry.promote(
        PromoteRequest(model=MODEL, version=first.version, loop_id="retrain-contract-credit-1")
    )
    assert promoted.champion == first.version and promoted.previous_champion is None
    champion = registry.champion(MODEL)
    assert champion is not None and champion.version == first.version

    trained2 = contract.backend.training.train(
        job(contract, "retrain-contract-credit-2", seed=1), heartbeat
    )
    second = registry.register(register_request(contract, "retrain-contract-credit-2", trained2))
    assert second.version != first.version
    promotion = registry.promote(
        PromoteRequest(model=MODEL, version=second.version, loop_id="retrain-contract-credit-2")
    )
    assert promotion.previous_champion == first.version
    # Promoting again changes nothing.
    assert (
        registry.promote(
            PromoteRequest(model=MODEL, version=second.version, loop_id="retrain-contract-credit-2")
        )
        == promotion
    )
    assert {v.version for v in registry.versions(MODEL)} == {first.version, second.version}

    # What evaluation loads: the registered estimator predicts the holdout.
    holdout = read_labelled_set(
        "holdout", resolve_uri(contract.home, contract.validation_path), contract.spec
    )
    predictions = registry.load(second).predict(holdout.features)
    assert len(predictions) == holdout.rows


def test_a_rejected_candidate_stops_being_the_challenger(contract: Contract) -> None:
    registry = contract.backend.registry
    loop_id = "retrain-contract-credit-1"
    trained = contract.backend.training.train(job(contract, loop_id), heartbeat)
    candidate = registry.register(register_request(contract, loop_id, trained))
    assert "challenger" in candidate.aliases
    request = RejectRequest(
        model=MODEL, version=candidate.version, loop_id=loop_id, reason="rejected_by_reviewer"
    )

    rejected = registry.reject(request)

    assert rejected.version == candidate.version and "challenger" not in rejected.aliases
    assert registry.reject(request) == rejected
    assert registry.champion(MODEL) is None
    assert [v.version for v in registry.versions(MODEL)] == [candidate.version]


def shift(contract: Contract, weights: dict[str, int], change_id: str) -> EndpointState:
    """Set the split as the shift_traffic activity does: retried while the endpoint is busy
    (a cloud endpoint takes a new variant in a separate step), then read back."""
    change = TrafficChange(
        model=MODEL, endpoint_url=contract.endpoint_url, weights=weights, change_id=change_id
    )
    serving = contract.backend.serving
    for _ in range(20):
        try:
            serving.set_traffic(change)
            return serving.read_traffic(MODEL, contract.endpoint_url)
        except EndpointUnavailable:
            continue
    raise AssertionError(f"{change_id} never applied")


def test_traffic_is_set_read_back_and_idempotent(contract: Contract) -> None:
    registry = contract.backend.registry
    versions = []
    for number in (1, 2):
        loop_id = f"retrain-contract-credit-{number}"
        trained = contract.backend.training.train(job(contract, loop_id, number), heartbeat)
        versions.append(registry.register(register_request(contract, loop_id, trained)).version)
    registry.promote(PromoteRequest(model=MODEL, version=versions[0], loop_id="l1"))
    v1, v2 = (f"v{version}" for version in versions)

    first = shift(contract, {v1: 100}, "rollout-contract/initial")
    assert live_split(first.weights) == {v1: 100}
    staged = shift(contract, {v1: 95, v2: 5}, "rollout-contract/5%")
    assert live_split(staged.weights) == {v1: 95, v2: 5}
    assert staged.generation > first.generation
    assert staged.variants.get(v2) == versions[1]
    # The same change again is a no-op: same split, same generation.
    again = shift(contract, {v1: 95, v2: 5}, "rollout-contract/5%")
    assert live_split(again.weights) == {v1: 95, v2: 5}
    assert again.generation == staged.generation
    # Rollback.
    back = shift(contract, {v1: 100, v2: 0}, "rollout-contract/rollback")
    assert live_split(back.weights) == {v1: 100}


def test_the_object_store_round_trips(contract: Contract, tmp_path: Path) -> None:
    store, root = contract.backend.store, contract.backend.store_root
    if store is None or root is None:
        pytest.skip("the local backend keeps its data as files under the retrain home")
    source = tmp_path / "payload.json"
    source.write_text('{"a": 1}')
    uploaded = store.upload(source, f"{root}/contract/payload.json", tags={"model": MODEL})
    assert store.head(f"{root}/contract/payload.json") == uploaded
    assert [o.uri for o in store.list(f"{root}/contract/")] == [uploaded.uri]
    copy = tmp_path / "copy.json"
    assert store.download(uploaded.uri, copy).etag == uploaded.etag
    assert copy.read_text() == '{"a": 1}'
    assert store.head(f"{root}/contract/missing.json") is None


# ---- capture, canary and cost ------------------------------------------------------------


def deployed(contract: Contract, bad_candidate: bool = False) -> tuple[str, str]:
    """v1 (champion, promoted) and v2 registered; the second trained by the demo's broken
    entrypoint when `bad_candidate` (right offline, wrong, slow and failing on single rows)."""
    registry = contract.backend.registry
    versions = []
    for number in (1, 2):
        loop_id = f"retrain-contract-credit-{number}"
        entrypoint = BAD_CANDIDATE if bad_candidate and number == 2 else None
        trained = contract.backend.training.train(
            job(contract, loop_id, number, entrypoint), heartbeat
        )
        versions.append(registry.register(register_request(contract, loop_id, trained)).version)
    registry.promote(PromoteRequest(model=MODEL, version=versions[0], loop_id="l1"))
    return versions[0], versions[1]


BAD_CANDIDATE = "starters.demo.bad_candidate:train"


def labelled_calls(count: int, seed: int) -> tuple[list[Call], dict[str, float]]:
    rows = RowSource(seed, PRE_DRIFT_FUNCTION, 1.0, f"contract-{seed}")
    return calls_from(rows.next_row, count)


def read_capture(contract: Contract, start: datetime) -> Path:
    """The capture directory once the backend brought its capture in (local: flushed)."""
    end = datetime.now(UTC) + timedelta(minutes=1)
    if contract.backend.capture is not None:
        synced = contract.backend.capture.sync(contract.spec, start, end, heartbeat)
        assert not synced.problems, synced.notes
    else:
        contract.backend.serving.flush_capture(contract.endpoint_url)
    return capture_dir(contract.home, contract.spec)


def test_capture_and_ground_truth_are_readable(contract: Contract) -> None:
    first, _ = deployed(contract)
    started = datetime.now(UTC) - timedelta(minutes=1)
    shift(contract, {f"v{first}": 100}, "rollout-contract/initial")
    calls, labels = labelled_calls(60, seed=11)

    answered = contract.traffic.send(calls)
    contract.traffic.label({rid: labels[rid] for rid in list(labels)[:40]})

    assert set(answered.values()) == {f"v{first}"}
    directory = read_capture(contract, started)
    window = read_labelled_window(
        directory, contract.spec.task, started, datetime.now(UTC) + timedelta(minutes=1)
    )
    # Every labelled answer, joined with its label by request id, whatever the platform.
    assert sorted(window.request_id.tolist()) == sorted(list(labels)[:40])
    assert set(window.variant.tolist()) == {f"v{first}"}
    assert set(window.version.tolist()) == {first}
    assert window.label.tolist() == [labels[rid] for rid in window.request_id.tolist()]
    assert window.rows.unmatched == 0 and window.rows.invalid == 0
    assert np.isin(window.prediction, (0.0, 1.0)).all()
    # The canary's reader sees every answer of the variant (labelled or not) in the window.
    state = contract.backend.serving.read_traffic(MODEL, contract.endpoint_url)
    sample = read_window(
        directory,
        WindowRef(variant=f"v{first}", generation=state.generation, since=started),
        by_time=contract.backend.capture is not None,
    )
    assert sample.size == 60 and int(np.isfinite(sample.label).sum()) == 40


def test_a_canary_with_a_bad_candidate_fails_and_rolls_back(contract: Contract) -> None:
    champion, candidate = deployed(contract, bad_candidate=True)
    v1, v2 = f"v{champion}", f"v{candidate}"
    shift(contract, {v1: 100}, "rollout-contract/initial")
    staged = shift(contract, {v1: 50, v2: 50}, "rollout-contract/50%")
    calls, labels = labelled_calls(400, seed=12)

    answered = contract.traffic.send(calls)
    contract.traffic.label(labels)

    assert {v1, v2} == set(answered.values())
    policy = CanaryPolicy(min_labelled=50)
    request = CanaryRequest(
        model=MODEL,
        endpoint_url=contract.endpoint_url,
        capture_dir=contract.spec.data.capture_location,
        champion=WindowRef(variant=v1, generation=staged.generation, since=staged.updated_at),
        challenger=WindowRef(variant=v2, generation=staged.generation, since=staged.updated_at),
        policy=policy,
        seed=7,
    )
    if contract.backend.capture is None:
        contract.backend.serving.flush_capture(contract.endpoint_url)
    statistics = contract.backend.canary.analyse(request, heartbeat)
    verdict = canary_verdict(statistics, policy, min_requests=100)

    assert verdict.outcome is Outcome.FAIL, verdict.summary
    failed = {check.name for check in verdict.checks if check.outcome is Outcome.FAIL}
    # Labelled quality decides on every backend: from the capture and its ground truth.
    assert failed & {CheckName.ACCURACY, CheckName.LOG_LOSS}, verdict.summary
    assert CheckName.ERROR_RATE in failed, verdict.summary
    assert statistics.challenger.labelled >= 50 and statistics.champion.labelled >= 50
    back = shift(contract, {v1: 100, v2: 0}, "rollout-contract/rollback")
    assert live_split(back.weights) == {v1: 100}


def test_training_reports_its_cost(contract: Contract) -> None:
    trained = contract.backend.training.train(job(contract, "retrain-contract-credit-1"), heartbeat)
    if contract.backend.store is None:
        # The local backend trains on the worker: no bill to report.
        assert trained.cost is None
        return
    assert trained.cost is not None and trained.cost > 0
    settings = contract.spec.backend_settings
    assert settings is not None
    # At most the whole run at the machine's hourly price (spot or billing granularity only
    # lower it, a second's rounding aside).
    spec = contract.spec
    if spec.sagemaker is not None:
        price = spec.sagemaker.training_price(spec.sagemaker.training_instance_type)
    elif spec.vertex is not None:
        price = spec.vertex.training_price(spec.vertex.machine_type)
    else:
        assert spec.azure is not None
        price = spec.azure.training_price(spec.azure.instance_type)
    assert price is not None
    assert trained.cost <= (trained.duration_seconds + 60) * price / 3600
