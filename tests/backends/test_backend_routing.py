"""Which backend a model's calls reach: the resolver and the routed Protocols."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.backends import BackendResolver, RoutedRegistry, UnknownBackend
from activities.local.backend import local_backend
from activities.ports import Backend
from activities.specs import SpecStore
from tests.support.cloud_data import sagemaker_settings
from tests.support.loop_harness import with_changes, write_dataset
from workflows.spec.models import ModelSpec


@pytest.fixture
def spec(tmp_path: Path) -> ModelSpec:
    return write_dataset(tmp_path, "credit", date(2026, 3, 31))


def on_sagemaker(spec: ModelSpec, **settings: str) -> ModelSpec:
    return with_changes(spec, {"backend": "sagemaker", "sagemaker": sagemaker_settings(**settings)})


def test_each_distinct_setting_builds_one_backend(tmp_path: Path, spec: ModelSpec) -> None:
    local = local_backend(tmp_path)
    built: list[ModelSpec] = []

    def factory(model_spec: ModelSpec) -> Backend:
        built.append(model_spec)
        return Backend("sagemaker", local.training, local.registry, local.serving, local.canary)

    resolver = BackendResolver(SpecStore(tmp_path), local, {"sagemaker": factory})
    first = resolver.for_spec(on_sagemaker(spec))
    assert resolver.for_spec(on_sagemaker(spec)) is first
    other = resolver.for_spec(on_sagemaker(spec, endpoint_name="another"))
    assert other is not first and len(built) == 2
    assert resolver.for_spec(spec) is local


def test_models_without_a_spec_stay_local_and_a_broken_spec_is_refused(
    tmp_path: Path, spec: ModelSpec
) -> None:
    local = local_backend(tmp_path)
    resolver = BackendResolver(SpecStore(tmp_path), local, {})
    assert resolver.for_model("never-registered") is local
    assert RoutedRegistry(resolver).champion("never-registered") is None

    SpecStore(tmp_path).register(on_sagemaker(spec))
    with pytest.raises(UnknownBackend, match="no sagemaker backend configured"):
        resolver.for_model("credit")

    SpecStore(tmp_path).path("credit").write_text('{"name": "credit", "backend": "azure"}')
    with pytest.raises(ApplicationError) as refused:
        resolver.for_model("credit")
    assert refused.value.type == "InvalidModelSpec" and refused.value.non_retryable
