"""A worker installed without a backend's extra refuses that backend's models for good, naming
the extra to install, and `retrain models validate` warns about it."""

from __future__ import annotations

import importlib
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
