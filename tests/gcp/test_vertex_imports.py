"""The Vertex backend loads Vertex's GAPIC v1 clients only: never the high-level aiplatform SDK,
its v1beta1 API or `vertexai`, which the image's slimming step removes (ops/image/slim.py).

What loading the backend loads is checked in a fresh interpreter (other tests may have imported
anything into this one); imports inside functions, run only on some paths, are read from the
sources."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.support.helpers import load_script

ROOT = Path(__file__).resolve().parents[2]
NEVER_LOADED = ("google.cloud.aiplatform", "google.cloud.aiplatform_v1beta1", "vertexai")

# Every module of activities.gcp imported, and every client GcpClients builds, built.
LOAD_THE_BACKEND = """
import importlib, json, pkgutil, sys
from google.auth.credentials import AnonymousCredentials
import activities.gcp
from activities.gcp.clients import GcpClients

for info in pkgutil.walk_packages(activities.gcp.__path__, "activities.gcp."):
    importlib.import_module(info.name)
address = "http://127.0.0.1:9"
clients = GcpClients(
    "retrain-tests",
    "us-central1",
    credentials=AnonymousCredentials(),
    api_endpoint=address,
    storage_endpoint=address,
    bigquery_endpoint=address,
    pubsub_endpoint=address,
)
for client in ("models", "jobs", "pipelines", "storage", "bigquery", "publisher"):
    getattr(clients, client)
print(json.dumps(sorted(sys.modules)))
"""


def removed_by_slim() -> tuple[str, ...]:
    return tuple(load_script("ops/image/slim.py").UNUSED_PACKAGES)


def test_the_vertex_backend_never_loads_the_high_level_sdk() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOAD_THE_BACKEND],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "google.cloud.aiplatform_v1" in loaded
    assert "activities.gcp.backend" in loaded
    for package in {*NEVER_LOADED, *removed_by_slim()}:
        found = [name for name in loaded if f"{name}.".startswith(f"{package}.")]
        assert found == [], f"{package} is loaded: {found[:5]}"


def imported_names(tree: ast.AST) -> set[str]:
    """Every module an import statement names (`from a import b` names a.b as well)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_import_of_ours_names_the_high_level_sdk() -> None:
    offending = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "activities").rglob("*.py"))
        for name in imported_names(ast.parse(path.read_text()))
        for package in {*NEVER_LOADED, *removed_by_slim()}
        if f"{name}.".startswith(f"{package}.")
    }
    assert offending == set()
