"""A worker installed without a backend's extra refuses that backend's models for good, naming
the extra to install, and `retrain models validate` warns about it."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.backends import builder_of, extra_of, missing_backend
from workflows.common.errors import ErrorType
from workflows.spec.backends import BACKENDS, CLOUD_BACKENDS, backend_info


def test_each_backend_extra_is_named_like_its_folder():
    assert (extra_of("sagemaker"), extra_of("vertex"), extra_of("local")) == ("aws", "gcp", "local")
    for backend in BACKENDS:
        folder = backend.builder.split(":")[0].split(".")[1]
        assert extra_of(backend.name) == folder


@pytest.mark.parametrize("backend", [b.name for b in CLOUD_BACKENDS])
def test_a_missing_sdk_is_a_non_retryable_error_naming_the_extra(
    backend: str, monkeypatch: pytest.MonkeyPatch
):
    real = importlib.import_module
    module = backend_info(backend).builder.split(":")[0]

    def without_sdk(name: str, *args: Any) -> Any:
        if name == module:
            raise ModuleNotFoundError("No module named 'the_sdk'", name="the_sdk")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_sdk)
    with pytest.raises(ApplicationError) as caught:
        builder_of(backend)
    error = caught.value
    assert error.type == ErrorType.BACKEND_NOT_INSTALLED and error.non_retryable
    assert f"adaptive-retraining[{extra_of(backend)}]" in error.message
    assert missing_backend(backend) == error.message
    monkeypatch.setattr(importlib, "import_module", real)
    assert missing_backend(backend) is None  # installed here (the dev extra has them all)
    assert missing_backend("local") is None


# Without the gcp extra, `google.cloud` may still exist: googleapis-common-protos (the `otel`
# extra's) installs part of that namespace package.
WITHOUT_GOOGLE_CLOUD_SDKS = """
import importlib.abc, sys
class Uninstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        sdks = ("aiplatform", "monitoring", "storage", "bigquery", "pubsub")
        if name.startswith(tuple(f"google.cloud.{sdk}" for sdk in sdks)):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Uninstalled())
import google.cloud  # the namespace stays importable, as with googleapis-common-protos
from activities.backends import missing_backend
print(missing_backend("vertex"))
"""


def test_a_missing_google_sdk_is_named_though_the_google_cloud_namespace_exists():
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_GOOGLE_CLOUD_SDKS],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert "adaptive-retraining[gcp]" in done.stdout
