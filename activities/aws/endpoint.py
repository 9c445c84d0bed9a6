"""Traffic on a SageMaker real-time endpoint: one production variant per registry version.

Every endpoint config carries the settings' `DataCaptureConfig` (activities/aws/capture.py), so
capture stays on through every rollout and rollback; an endpoint found without it is moved to a
config that has it.

`SageMakerEndpoint` implements `ServingBackend`. A change whose variants the endpoint does not
have yet first changes the endpoint's layout: a SageMaker model per new variant (from the
registry version's model package), an endpoint config named after the change id, and
CreateEndpoint or UpdateEndpoint (a blue/green deployment on AWS, during which the endpoint is
`Updating`). New variants start at weight 0, and their autoscaling is in place before they take
traffic. The split itself is then set with UpdateEndpointWeightsAndCapacities, which changes no
instance. While the endpoint is not `InService` the change raises `EndpointUnavailable`
(retryable): the activity's retry policy is the wait, and a retry finds the layout done and
goes on with the weights.

Idempotency: the applied change id and a generation counter live in the endpoint's tags
(`retrain:change-id`, `retrain:generation`); a change whose id is already there changes
nothing. The endpoint is tagged with its model (`retrain:model`) and refused for any other.
The workflows' `endpoint_url` (the local endpoint's address) means nothing here: the endpoint
is the one named in the model's `SageMakerSettings`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC
from typing import Any

from botocore.exceptions import ClientError
from temporalio.exceptions import ApplicationError

from activities.aws.autoscaling import VariantAutoscaling
from activities.aws.capture import data_capture_config
from activities.aws.clients import AwsClients
from activities.aws.errors import aws_call, call, error_code, translate
from activities.ports import EndpointUnavailable, TrafficRefused
from activities.scaling import ScalingLog
from workflows.rollout.models import EndpointState, TrafficChange
from workflows.spec.sagemaker import SageMakerSettings

log = logging.getLogger(__name__)

MODEL_TAG = "retrain:model"
CHANGE_TAG = "retrain:change-id"
GENERATION_TAG = "retrain:generation"
IN_SERVICE = "InService"
BROKEN = frozenset({"Failed", "OutOfService", "Deleting", "RollingBack"})
# SageMaker resource names are at most 63 characters.
NAME_LIMIT = 63


class SageMakerEndpoint:
    def __init__(
        self,
        clients: AwsClients,
        settings: SageMakerSettings,
        autoscaling: VariantAutoscaling | None,
        model_package: Callable[[str, str], str],
        scaling_log: ScalingLog | None = None,
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.autoscaling = autoscaling
        # Where the scaler's activities seen at each shift are recorded.
        self.scaling_log = scaling_log
        # (model, version) -> the model package ARN the registry holds for that version.
        self.model_package = model_package

    @property
    def name(self) -> str:
        return self.settings.endpoint_name

    # ---- ServingBackend ------------------------------------------------------------------

    def set_traffic(self, change: TrafficChange) -> EndpointState:
        endpoint = self._describe()
        if endpoint is None:
            self._create(change)
            raise EndpointUnavailable(f"SageMaker endpoint {self.name} is being created")
        tags = self._tags(endpoint, change.model)
        if tags.get(CHANGE_TAG) == change.change_id:
            return self._state(change.model, endpoint, tags)
        self._require_in_service(endpoint)
        production, shadow = _variants(endpoint)
        wanted = set(change.weights)
        if (
            not wanted <= set(production)
            or (change.shadow and change.shadow not in shadow)
            or (set(shadow) - {change.shadow})
            or not self._capturing(endpoint)
        ):
            self._update(change, endpoint, production)
            raise EndpointUnavailable(
                f"SageMaker endpoint {self.name} is being updated to serve {sorted(wanted)} "
                f"(shadow {change.shadow})"
            )
        if self.autoscaling is not None:
            # Before any traffic reaches them; puts, so re-applying is harmless, and this also
            # covers the variants a new endpoint was created with.
            for variant in sorted(v for v, weight in change.weights.items() if weight > 0):
                self.autoscaling.prepare(self.name, variant)
        call(
            "UpdateEndpointWeightsAndCapacities",
            self.clients.sagemaker.update_endpoint_weights_and_capacities,
            EndpointName=self.name,
            DesiredWeightsAndCapacities=[
                {"VariantName": variant, "DesiredWeight": float(change.weights.get(variant, 0))}
                for variant in sorted(production)
            ],
        )
        self._record_scaling(
            change.model, sorted(v for v, weight in change.weights.items() if weight > 0)
        )
        generation = int(tags.get(GENERATION_TAG, "0")) + 1
        call(
            "AddTags",
            self.clients.sagemaker.add_tags,
            ResourceArn=endpoint["EndpointArn"],
            Tags=[
                {"Key": CHANGE_TAG, "Value": change.change_id},
                {"Key": GENERATION_TAG, "Value": str(generation)},
            ],
        )
        return self.read_traffic(change.model, change.endpoint_url)

    def read_traffic(self, model: str, endpoint_url: str) -> EndpointState:
        endpoint = self._describe()
        if endpoint is None:
            raise TrafficRefused(f"SageMaker endpoint {self.name} does not exist")
        return self._state(model, endpoint, self._tags(endpoint, model))

    def flush_capture(self, endpoint_url: str) -> None:
        """Nothing to flush: SageMaker writes its data capture to S3 by itself (read by the
        backend's `S3CaptureSource`)."""

    def _capturing(self, endpoint: dict[str, Any]) -> bool:
        """Whether the endpoint captures as the settings ask (an endpoint made before capture
        was on, or elsewhere, gets a new config that captures)."""
        wanted = data_capture_config(self.settings)
        if wanted is None:
            return True
        current = endpoint.get("DataCaptureConfig") or {}
        destination = str(current.get("DestinationS3Uri", "")).rstrip("/")
        return bool(current.get("EnableCapture")) and destination == wanted["DestinationS3Uri"]

    def _record_scaling(self, model: str, variants: list[str]) -> None:
        """The scaler's recent activities on the live variants, into the worker's log beside
        the shift and into the scaling log (once each). Observability only: a failure to read
        them never fails the shift."""
        if self.autoscaling is None:
            return
        for variant in variants:
            try:
                events = self.autoscaling.events(model, self.name, variant)
            except ApplicationError as error:
                log.warning("scaling activities of %s/%s unreadable: %s", self.name, variant, error)
                continue
            if self.scaling_log is not None:
                self.scaling_log.record(events)

    # ---- reading -------------------------------------------------------------------------

    def _describe(self) -> dict[str, Any] | None:
        try:
            response: dict[str, Any] = self.clients.sagemaker.describe_endpoint(
                EndpointName=self.name
            )
        except ClientError as error:
            if _not_found(error):
                return None
            raise translate(error, "DescribeEndpoint") from error
        return response

    def _tags(self, endpoint: dict[str, Any], model: str) -> dict[str, str]:
        """The endpoint's tags, refusing an endpoint that is not this model's."""
        with aws_call("ListTags"):
            pages = self.clients.sagemaker.get_paginator("list_tags").paginate(
                ResourceArn=endpoint["EndpointArn"]
            )
            # Later entries win: a tag set again is the newest value.
            tags = {tag["Key"]: tag["Value"] for page in pages for tag in page.get("Tags", [])}
        owner = tags.get(MODEL_TAG)
        if owner != model:
            whose = f"model {owner!r}" if owner else "no model of ours"
            raise TrafficRefused(
                f"SageMaker endpoint {self.name} serves {whose}, not {model!r}: refusing to "
                "change its traffic"
            )
        return tags

    def _require_in_service(self, endpoint: dict[str, Any]) -> None:
        status = endpoint.get("EndpointStatus", "")
        if status in BROKEN:
            reason = endpoint.get("FailureReason") or "no failure reason given"
            raise TrafficRefused(f"SageMaker endpoint {self.name} is {status}: {reason}")
        if status != IN_SERVICE:
            raise EndpointUnavailable(f"SageMaker endpoint {self.name} is {status}; waiting")

    def _state(self, model: str, endpoint: dict[str, Any], tags: dict[str, str]) -> EndpointState:
        # While AWS applies a change (seconds to minutes) the current weights are still the old
        # ones: report only a settled endpoint, so the read-back compares what is live.
        self._require_in_service(endpoint)
        production, shadow = _variants(endpoint)
        weights = percentages(
            {v: float(s.get("CurrentWeight", 0.0)) for v, s in production.items()}
        )
        modified = endpoint["LastModifiedTime"]
        return EndpointState(
            model=model,
            weights=weights,
            shadow=next(iter(sorted(shadow)), None),
            generation=int(tags.get(GENERATION_TAG, "0")),
            change_id=tags.get(CHANGE_TAG),
            updated_at=modified.astimezone(UTC)
            if modified.tzinfo
            else modified.replace(tzinfo=UTC),
            variants={variant: variant.removeprefix("v") for variant in [*production, *shadow]},
        )

    # ---- changing the layout -------------------------------------------------------------

    def _create(self, change: TrafficChange) -> None:
        variants = [
            self._new_variant(change, variant, float(weight))
            for variant, weight in sorted(change.weights.items())
        ]
        shadow = [self._new_variant(change, change.shadow, 1.0)] if change.shadow else []
        config = self._config(change, variants, shadow)
        call(
            "CreateEndpoint",
            self.clients.sagemaker.create_endpoint,
            EndpointName=self.name,
            EndpointConfigName=config,
            Tags=self._resource_tags(change),
        )

    def _update(
        self, change: TrafficChange, endpoint: dict[str, Any], production: dict[str, Any]
    ) -> None:
        """Move the endpoint to the change's variants: the live ones stay (at their current
        weights and instance counts, so nothing moves during the deployment), requested ones
        are added at weight 0, and variants at 0% that the change does not name are retired."""
        current = self._current_config(endpoint)
        live = {v for v, summary in production.items() if summary.get("CurrentWeight", 0) > 0}
        keep = (live | set(change.weights)) - {change.shadow}
        variants: list[dict[str, Any]] = []
        for variant in sorted(keep):
            if variant in current:
                summary = production.get(variant, {})
                variants.append(
                    {
                        **current[variant],
                        "InitialInstanceCount": summary.get(
                            "CurrentInstanceCount", current[variant]["InitialInstanceCount"]
                        ),
                        "InitialVariantWeight": float(summary.get("CurrentWeight", 0.0)),
                    }
                )
            else:
                variants.append(self._new_variant(change, variant, 0.0))
        if not any(entry["InitialVariantWeight"] > 0 for entry in variants):
            # Nothing is live (a broken split): start from the requested one.
            for entry in variants:
                entry["InitialVariantWeight"] = float(change.weights.get(entry["VariantName"], 0))
        shadow: list[dict[str, Any]] = []
        if change.shadow:
            # A shadow's weight is its sampling share of the live traffic: mirror all of it.
            base = current.get(change.shadow) or self._new_variant(change, change.shadow, 1.0)
            shadow = [{**base, "InitialVariantWeight": 1.0}]
        config = self._config(change, variants, shadow)
        if self.autoscaling is not None:
            # AWS refuses to remove a variant that is still a scalable target.
            for variant in sorted(set(production) - keep):
                self.autoscaling.retire(self.name, variant)
        call(
            "UpdateEndpoint",
            self.clients.sagemaker.update_endpoint,
            EndpointName=self.name,
            EndpointConfigName=config,
            RetainAllVariantProperties=False,
        )

    def _current_config(self, endpoint: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Each variant of the endpoint's config (production and shadow) as a ProductionVariant."""
        response = call(
            "DescribeEndpointConfig",
            self.clients.sagemaker.describe_endpoint_config,
            EndpointConfigName=endpoint["EndpointConfigName"],
        )
        fields = ("VariantName", "ModelName", "InstanceType", "InitialInstanceCount")
        return {
            variant["VariantName"]: {key: variant[key] for key in fields if key in variant}
            | {"InitialVariantWeight": float(variant.get("InitialVariantWeight", 0.0))}
            for variant in [
                *response.get("ProductionVariants", []),
                *response.get("ShadowProductionVariants", []),
            ]
        }

    def _new_variant(self, change: TrafficChange, variant: str, weight: float) -> dict[str, Any]:
        return {
            "VariantName": variant,
            "ModelName": self._ensure_model(change, variant),
            "InstanceType": self.settings.instance_type,
            "InitialInstanceCount": self.settings.initial_instance_count,
            "InitialVariantWeight": weight,
        }

    def _ensure_model(self, change: TrafficChange, variant: str) -> str:
        name = _name(self.name, variant)
        try:
            self.clients.sagemaker.describe_model(ModelName=name)
            return name
        except ClientError as error:
            if not _not_found(error):
                raise translate(error, "DescribeModel") from error
        package = self.model_package(change.model, variant.removeprefix("v"))
        call(
            "CreateModel",
            self.clients.sagemaker.create_model,
            ModelName=name,
            Containers=[{"ModelPackageName": package}],
            ExecutionRoleArn=self.settings.role_arn,
            Tags=self._resource_tags(change),
        )
        return name

    def _config(
        self, change: TrafficChange, variants: list[dict[str, Any]], shadow: list[dict[str, Any]]
    ) -> str:
        """The endpoint config of this change, created unless a retry already made it."""
        digest = hashlib.sha256(change.change_id.encode()).hexdigest()[:12]
        name = _name(self.name, digest)
        try:
            self.clients.sagemaker.describe_endpoint_config(EndpointConfigName=name)
            return name
        except ClientError as error:
            if not _not_found(error):
                raise translate(error, "DescribeEndpointConfig") from error
        request: dict[str, Any] = {
            "EndpointConfigName": name,
            "ProductionVariants": variants,
            "Tags": self._resource_tags(change),
        }
        if shadow:
            request["ShadowProductionVariants"] = shadow
        if (capture := data_capture_config(self.settings)) is not None:
            # On every config, so no rollout or rollback ever switches capture off.
            request["DataCaptureConfig"] = capture
        call("CreateEndpointConfig", self.clients.sagemaker.create_endpoint_config, **request)
        return name

    def _resource_tags(self, change: TrafficChange) -> list[dict[str, str]]:
        tags = {**self.settings.tags, MODEL_TAG: change.model}
        return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def _variants(endpoint: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The endpoint's production and shadow variant summaries by name."""
    production = {v["VariantName"]: v for v in endpoint.get("ProductionVariants", [])}
    shadow = {v["VariantName"]: v for v in endpoint.get("ShadowProductionVariants", [])}
    return production, shadow


def _not_found(error: ClientError) -> bool:
    # SageMaker answers a missing endpoint, config or model with a ValidationException.
    message = str(error.response.get("Error", {}).get("Message", ""))
    return error_code(error) in {"ValidationException", "ResourceNotFound"} and (
        "Could not find" in message or "does not exist" in message
    )


def _name(prefix: str, suffix: str) -> str:
    return f"{prefix[: NAME_LIMIT - len(suffix) - 1]}-{suffix}"


def percentages(weights: dict[str, float]) -> dict[str, int]:
    """Integer percentages of the weights summing to exactly 100 (largest remainder), or all
    0 when nothing has weight."""
    total = sum(weights.values())
    if total <= 0:
        return {variant: 0 for variant in weights}
    exact = {variant: weight * 100 / total for variant, weight in weights.items()}
    result = {variant: int(share) for variant, share in exact.items()}
    by_remainder = sorted(exact, key=lambda v: (result[v] - exact[v], v))
    for variant in by_remainder[: 100 - sum(result.values())]:
        result[variant] += 1
    return result
