"""The Azure fake on loopback, and the azure backend's connections to it, for its tests.

One fake per test (it starts in milliseconds). The real SDKs reach it through
`LoopbackTransport` with a `StaticTokenCredential` (tests/support/azure_fake/client.py): they
build their real Azure URLs, and the fake routes by the host they meant. The workspace's default
datastore is the tests' container (`BUCKET`), where the backend keeps runs and models.

The Azure SDKs are an optional extra: this module imports them only inside its fixture and
helpers, so the suite loads without them (the azure tests skip).
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from activities import container_entry
from tests.support.azure_fake import ALL_ROUTES, FakeState, RunningFake, serve
from tests.support.azure_fake.blob import create_container, get_blob, put_blob
from tests.support.azure_fake.jobs import RUN_JOB
from tests.support.cloud_data import BUCKET

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
_DATASTORE_URI = re.compile(r"^azureml://datastores/([^/]+)/paths/(.*)$")
_REFERENCE = re.compile(r"\$\{\{(inputs|outputs)\.(\w+)\}\}")


def fake_state() -> FakeState:
    state = FakeState(datastores={"workspaceblobstore": BUCKET})
    create_container(state, state.storage_account, BUCKET)
    return state


@pytest.fixture
def azure() -> Iterator[RunningFake]:
    pytest.importorskip("azure.ai.ml")
    state = fake_state()
    for running in serve(state, ALL_ROUTES):
        yield running
        assert state.unhandled == [], "the SDKs called routes the Azure fake does not know"


def fake_connections(fake: RunningFake, **changes: Any) -> Any:
    """The worker's `CloudConnections` to every Azure API of the fake."""
    from activities.backends import CloudConnections
    from tests.support.azure_fake.client import LoopbackTransport, StaticTokenCredential

    return CloudConnections(
        **{
            "azure_credential": StaticTokenCredential(),
            "azure_transport": lambda: LoopbackTransport(fake.url),
            "poll_seconds": 0.02,
            **changes,
        }
    )


def fake_clients(fake: RunningFake, settings: Any) -> Any:
    from activities.azure.clients import AzureClients

    connections = fake_connections(fake)
    return AzureClients(
        settings, credential=connections.azure_credential, transport=connections.azure_transport
    )


class ContainerEmulator:
    """What Azure ML runs for a command job, against the fake's blob storage.

    Set as the fake's `run_job` hook: it resolves the job's `${{inputs.x}}` and
    `${{outputs.y}}` to a temporary directory, copies each input blob there from the fake's
    datastore container (a read-only mount), runs the job's real command (`python -m
    activities.container_entry ...`: its `main` with the command's arguments, in this process,
    so a test pays no interpreter start per job) and copies every output folder back (a
    read-write mount writes through). `gate` holds a job running until it is set.
    """

    def __init__(self, state: FakeState) -> None:
        self.state = state
        self.runs: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        state.hooks[RUN_JOB] = self.run

    def _location(self, uri: str) -> tuple[str, str]:
        found = _DATASTORE_URI.match(uri)
        assert found is not None, f"not a datastore uri: {uri}"
        return self.state.datastores[found.group(1)], found.group(2)

    def run(self, job: dict[str, Any]) -> str | None:
        self.gate.wait(timeout=60)
        properties = job["properties"]
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            paths: dict[tuple[str, str], Path] = {}
            for name, given in (properties.get("inputs") or {}).items():
                if given.get("jobInputType") == "literal":
                    continue
                container, blob = self._location(given["uri"])
                data = get_blob(self.state, self.state.storage_account, container, blob)
                assert data is not None, f"the job found no {given['uri']}"
                target = root / "inputs" / name / Path(blob).name
                target.parent.mkdir(parents=True)
                target.write_bytes(data)
                paths["inputs", name] = target
            for name in properties.get("outputs") or {}:
                paths["outputs", name] = root / "outputs" / name
                paths["outputs", name].mkdir(parents=True)
            command = _REFERENCE.sub(
                lambda m: str(paths[m.group(1), m.group(2)]), properties["command"]
            )
            argv = command.split()
            assert argv[:3] == ["python", "-m", "activities.container_entry"], argv
            status = container_entry.main(argv[3:])
            self.runs.append(job["name"])
            for name, given in (properties.get("outputs") or {}).items():
                container, prefix = self._location(given["uri"])
                folder = paths["outputs", name]
                for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                    blob = f"{prefix.rstrip('/')}/{file.relative_to(folder)}"
                    put_blob(
                        self.state, self.state.storage_account, container, blob, file.read_bytes()
                    )
        if status != 0:
            # What Azure ML's run history says; the entrypoint's own error is in the failure file.
            return "Execution failed. User process 'python' exited with status code 1."
        return None
