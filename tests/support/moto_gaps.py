"""Test-only shim filling moto's SageMaker endpoint gaps, so a rollout can run end to end.

`ThreadedMotoServer` serves from this process, so patching moto's SageMaker classes changes
what the server answers. The `moto_gaps` fixture installs (and afterwards removes):

- UpdateEndpoint (unimplemented in moto): the endpoint takes the new config's production and
  shadow variants, as after AWS's blue/green deployment (instantly: moto has no `Updating`).
- Shadow variants: moto drops `ShadowProductionVariants`; they are kept on the config and the
  endpoint and reported by Describe*.
- UpdateEndpointWeightsAndCapacities with weights only: moto sets the instance counts to None;
  AWS keeps them. It also bumps LastModifiedTime, as AWS does.
- AddTags: moto appends a second tag with the same key; AWS overwrites the value.
- DescribeTrainingJob: moto reports no TrainingTimeInSeconds / BillableTimeInSeconds; the
  container emulator sets them (`set_training_times`) from the run it played.
- DescribeScalingActivities (unimplemented in moto): answered from the activities a test
  records with `record_scaling_activity` (moto runs no scaler), newest first, filtered by
  namespace, resource id and dimension as AWS does.

`set_endpoint_status` puts an endpoint in any status (moto's are always InService).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto.applicationautoscaling.responses import ApplicationAutoScalingResponse
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend, sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse

from tests.support.aws_harness import ACCOUNT, REGION


def _update_endpoint(self: SageMakerResponse) -> ActionResult:
    name = self._get_param("EndpointName")
    config_name = self._get_param("EndpointConfigName")
    endpoint = self.sagemaker_backend.endpoints.get(name)
    if endpoint is None:
        raise ValidationError(message=f"Could not find endpoint {name!r}.")
    config = self.sagemaker_backend.endpoint_configs.get(config_name)
    if config is None:
        raise ValidationError(message=f"Could not find endpoint configuration {config_name!r}.")
    _apply_config(endpoint, config)
    return ActionResult({"EndpointArn": endpoint.arn})


def _apply_config(endpoint: FakeEndpoint, config: Any) -> None:
    endpoint.endpoint_config_name = config.endpoint_config_name
    endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
    shadow = getattr(config, "shadow_production_variants", None) or []
    # Describe* report every attribute of moto's objects, so a new one shows up as a field.
    endpoint.shadow_production_variants = endpoint._process_production_variants(shadow) or None  # type: ignore[attr-defined]
    endpoint.data_capture_config = config.data_capture_config
    endpoint.last_modified_time = utcnow()


def _wrap_create_endpoint_config(original: Any) -> Any:
    def create_endpoint_config(self: SageMakerResponse) -> Any:
        result = original(self)
        shadow = self._get_param("ShadowProductionVariants")
        if shadow:
            name = self._get_param("EndpointConfigName")
            config = self.sagemaker_backend.endpoint_configs[name]
            config.shadow_production_variants = shadow  # type: ignore[attr-defined]
        return result

    return create_endpoint_config


def _wrap_create_endpoint(original: Any) -> Any:
    def create_endpoint(self: SageMakerModelBackend, **kwargs: Any) -> FakeEndpoint:
        endpoint: FakeEndpoint = original(self, **kwargs)
        _apply_config(endpoint, self.endpoint_configs[kwargs["endpoint_config_name"]])
        return endpoint

    return create_endpoint


def _wrap_update_weights(original: Any) -> Any:
    def update_endpoint_weights_and_capacities(
        self: SageMakerModelBackend,
        endpoint_name: str,
        desired_weights_and_capacities: list[dict[str, Any]],
    ) -> str:
        endpoint = self.endpoints.get(endpoint_name)
        counts = {
            variant["VariantName"]: variant.get("CurrentInstanceCount")
            for variant in (endpoint.production_variants if endpoint else [])
        }
        arn: str = original(self, endpoint_name, desired_weights_and_capacities)
        assert endpoint is not None
        for variant in endpoint.production_variants:
            if variant.get("CurrentInstanceCount") is None:
                variant["CurrentInstanceCount"] = counts[variant["VariantName"]]
                variant["DesiredInstanceCount"] = counts[variant["VariantName"]]
        endpoint.last_modified_time = utcnow()
        return arn

    return update_endpoint_weights_and_capacities


def _add_tags(
    self: SageMakerModelBackend, arn: str, tags: list[dict[str, str]]
) -> list[dict[str, str]]:
    resource = self._get_resource_from_arn(arn)
    keys = {tag["Key"] for tag in tags}
    resource.tags = [tag for tag in resource.tags if tag["Key"] not in keys] + list(tags)
    tagged: list[dict[str, str]] = resource.tags
    return tagged


# (resource id) -> the scaling activities a test played, as AWS's API shapes them.
SCALING_ACTIVITIES: dict[str, list[dict[str, Any]]] = {}


def record_scaling_activity(resource_id: str, activity: dict[str, Any]) -> None:
    SCALING_ACTIVITIES.setdefault(resource_id, []).append(
        {
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource_id,
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
            **activity,
        }
    )


def _describe_scaling_activities(self: ApplicationAutoScalingResponse) -> str:
    resource = self._get_param("ResourceId")
    namespace = self._get_param("ServiceNamespace")
    dimension = self._get_param("ScalableDimension")
    found = [
        {**activity, "StartTime": activity["StartTime"].timestamp()}
        for key, activities in SCALING_ACTIVITIES.items()
        if resource in (None, key)
        for activity in activities
        if activity["ServiceNamespace"] == namespace
        and dimension in (None, activity["ScalableDimension"])
    ]
    found.sort(key=lambda activity: activity["StartTime"], reverse=True)
    return json.dumps({"ScalingActivities": found})


def set_endpoint_status(name: str, status: str, reason: str | None = None) -> None:
    endpoint = sagemaker_backends[ACCOUNT][REGION].endpoints[name]
    endpoint.endpoint_status = status
    endpoint.failure_reason = reason  # type: ignore[assignment]


@pytest.fixture
def moto_gaps(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(SageMakerResponse, "update_endpoint", _update_endpoint, raising=False)
    monkeypatch.setattr(
        SageMakerResponse,
        "create_endpoint_config",
        _wrap_create_endpoint_config(SageMakerResponse.create_endpoint_config),
    )
    monkeypatch.setattr(
        SageMakerModelBackend,
        "create_endpoint",
        _wrap_create_endpoint(SageMakerModelBackend.create_endpoint),
    )
    monkeypatch.setattr(
        SageMakerModelBackend,
        "update_endpoint_weights_and_capacities",
        _wrap_update_weights(SageMakerModelBackend.update_endpoint_weights_and_capacities),
    )
    monkeypatch.setattr(SageMakerModelBackend, "add_tags", _add_tags)
    monkeypatch.setattr(
        ApplicationAutoScalingResponse,
        "describe_scaling_activities",
        _describe_scaling_activities,
        raising=False,
    )
    SCALING_ACTIVITIES.clear()
    yield
    SCALING_ACTIVITIES.clear()
