"""Traffic on an Azure ML managed online endpoint: the `ServingBackend` of the azure backend.

One endpoint per model (`settings.endpoint_name`, created when absent, tagged with the model);
one deployment per registry version, named `retrain-v<version>` for variant `v<version>`:
the new version is deployed beside the serving one (blue/green) and traffic moves between
them by the endpoint's `traffic` weights; a shadow stage mirrors `mirror_percentage` of live
requests to the candidate (`mirror_traffic`: its answers are collected, never returned).
Variants left at 0% stay deployed, so a rollback is one traffic change.

Every deployment collects its inputs and outputs with Azure ML's data collector
(`activities/azure/capture.py` reads them) and gets an autoscale setting
(`activities/azure/autoscale.py`) once it is ready.

Idempotency: the endpoint's tags hold the last change id, the generation (incremented only by
a new change id) and when the change was applied. A change whose id and weights are already
there returns the endpoint's state. Creating an endpoint or a deployment takes minutes on
Azure, longer than the traffic activity may run: it is started, and the activity fails
retryably (`EndpointUnavailable`) until it has succeeded; so does a traffic update still in
progress. What Azure refuses (a split it does not accept, a deployment that failed) is
`TrafficRefused`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from activities.azure.autoscale import ensure_autoscale
from activities.azure.clients import AzureClients
from activities.azure.errors import azure_call, describe, status_of
from activities.ports import EndpointUnavailable, TrafficRefused
from workflows.rollout.models import EndpointState, TrafficChange
from workflows.spec.azure import AzureSettings

MODEL_TAG = "retrain.model"
CHANGE_TAG = "retrain.change"
GENERATION_TAG = "retrain.generation"
CHANGED_AT_TAG = "retrain.changed-at"
DEPLOYMENT_PREFIX = "retrain-"
_DEPLOYMENT = re.compile(r"^retrain-(v[1-9][0-9]{0,8})$")
BUSY = ("creating", "updating", "deleting", "provisioning")
COLLECTIONS = ("model_inputs", "model_outputs")


def deployment_name(variant: str) -> str:
    return f"{DEPLOYMENT_PREFIX}{variant}"


def variant_of(deployment: str) -> str | None:
    found = _DEPLOYMENT.match(deployment)
    return found.group(1) if found else None


def change_tag(change_id: str) -> str:
    """The change id as a tag value (at most 256 characters; a digest keeps long ids unique)."""
    if len(change_id) <= 256:
        return change_id
    return f"{change_id[:230]}#{hashlib.sha256(change_id.encode()).hexdigest()[:24]}"


@contextmanager
def endpoint_call(doing: str) -> Iterator[None]:
    """`azure_call`, except that an endpoint busy with another operation (409) or unavailable
    (429/5xx) is `EndpointUnavailable`, and a request Azure refuses (4xx) is `TrafficRefused`."""
    with azure_call(doing):
        try:
            yield
        except HttpResponseError as error:
            status = status_of(error)
            if status in (409, 429) or (status is not None and status >= 500):
                raise EndpointUnavailable(f"{doing}: {describe(error)}") from error
            # Auth failures (401/403) stay Azure's: `azure_call` makes them non-retryable.
            if status is not None and status not in (401, 403):
                raise TrafficRefused(f"{doing}: {describe(error)}") from error
            raise


def provisioning(resource: Any) -> str:
    """The resource's provisioning state, lower case (the SDK gives an enum or a string)."""
    state = resource.provisioning_state
    return str(getattr(state, "value", state)).lower()


def our_variants(traffic: dict[str, Any]) -> dict[str, int]:
    return {
        variant: int(weight)
        for deployment, weight in traffic.items()
        if (variant := variant_of(deployment)) is not None
    }


class AzureEndpoint:
    # How long one activity attempt waits for a traffic update before retrying later.
    UPDATE_WAIT = 20.0

    def __init__(self, clients: AzureClients, settings: AzureSettings) -> None:
        self._clients = clients
        self._settings = settings

    @property
    def _ml(self) -> Any:
        return self._clients.ml

    def set_traffic(self, change: TrafficChange) -> EndpointState:
        endpoint = self._endpoint(change.model) or self._create(change.model)
        self._ready(endpoint)
        live = our_variants(endpoint.traffic or {})
        wanted = {variant: weight for variant, weight in change.weights.items()}
        mirrored = {change.shadow: self._settings.mirror_percentage} if change.shadow else {}
        tags = dict(endpoint.tags or {})
        if tags.get(CHANGE_TAG) == change_tag(change.change_id) and self._applied(
            endpoint, wanted, mirrored
        ):
            return self._state(change.model, endpoint)
        deployed = self._deployments()
        for variant in sorted(set(wanted) | set(mirrored)):
            self._deploy(change.model, variant, deployed.get(deployment_name(variant)), endpoint)
        traffic = {deployment_name(v): 0 for v in live} | {
            deployment_name(v): w for v, w in wanted.items()
        }
        endpoint.traffic = traffic
        endpoint.mirror_traffic = {deployment_name(v): p for v, p in mirrored.items()}
        generation = int(tags.get(GENERATION_TAG, "0")) + 1
        endpoint.tags = tags | {
            CHANGE_TAG: change_tag(change.change_id),
            GENERATION_TAG: str(generation),
            CHANGED_AT_TAG: datetime.now(UTC).isoformat(),
        }
        doing = f"setting traffic {traffic} (mirror {endpoint.mirror_traffic}) on {endpoint.name}"
        with endpoint_call(doing):
            poller = self._ml.online_endpoints.begin_create_or_update(endpoint)
            poller.wait(self.UPDATE_WAIT)
            if not poller.done():
                raise EndpointUnavailable(f"{doing}: still in progress")
            poller.result()
        return self.read_traffic(change.model, "")

    def read_traffic(self, model: str, endpoint_url: str) -> EndpointState:
        """`endpoint_url` is the local endpoint's: the Azure endpoint comes from the settings."""
        del endpoint_url
        endpoint = self._endpoint(model)
        if endpoint is None:
            raise TrafficRefused(f"no Azure ML online endpoint {self._settings.endpoint_name!r}")
        return self._state(model, endpoint)

    def flush_capture(self, endpoint_url: str) -> None:
        """Azure ML's data collector writes its own blobs: nothing is buffered here."""

    def retire(self, model: str, variant: str) -> None:
        """Delete a variant's deployment that takes no traffic any more (frees its VMs)."""
        endpoint = self._endpoint(model)
        if endpoint is None:
            return
        name = deployment_name(variant)
        if (endpoint.traffic or {}).get(name, 0) or (endpoint.mirror_traffic or {}).get(name, 0):
            raise TrafficRefused(f"{variant} still takes traffic on {endpoint.name}")
        with endpoint_call(f"deleting deployment {name}"):
            try:
                self._ml.online_deployments.begin_delete(name, endpoint_name=endpoint.name)
            except ResourceNotFoundError:
                return

    # ---- Azure ML calls ----------------------------------------------------------------------

    def _endpoint(self, model: str) -> Any | None:
        name = self._settings.endpoint_name
        with endpoint_call(f"reading online endpoint {name}"):
            try:
                endpoint = self._ml.online_endpoints.get(name)
            except ResourceNotFoundError:
                return None
        owner = (endpoint.tags or {}).get(MODEL_TAG)
        if owner != model:
            raise TrafficRefused(
                f"the online endpoint {name} is tagged for model {owner!r}, not {model!r}"
            )
        return endpoint

    def _create(self, model: str) -> Any:
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        name = self._settings.endpoint_name
        wanted = ManagedOnlineEndpoint(
            name=name,
            auth_mode="key",
            description=f"adaptive-retraining endpoint of {model}",
            tags={**self._settings.tags, MODEL_TAG: model},
        )
        with endpoint_call(f"creating online endpoint {name}"):
            self._ml.online_endpoints.begin_create_or_update(wanted)
        raise EndpointUnavailable(f"creating online endpoint {name}: started, not ready yet")

    def _ready(self, endpoint: Any) -> None:
        state = provisioning(endpoint)
        if state in BUSY:
            raise EndpointUnavailable(f"online endpoint {endpoint.name} is {state}")
        if state != "succeeded":
            raise TrafficRefused(f"online endpoint {endpoint.name} is {state}")

    def _applied(self, endpoint: Any, wanted: dict[str, int], mirrored: dict[str, int]) -> bool:
        live = {v: w for v, w in our_variants(endpoint.traffic or {}).items() if w}
        shadow = {v: p for v, p in our_variants(endpoint.mirror_traffic or {}).items() if p}
        return live == {v: w for v, w in wanted.items() if w} and shadow == mirrored

    def _deployments(self) -> dict[str, Any]:
        name = self._settings.endpoint_name
        with endpoint_call(f"listing the deployments of {name}"):
            return {d.name: d for d in self._ml.online_deployments.list(name)}

    def _deploy(self, model: str, variant: str, current: Any | None, endpoint: Any) -> None:
        """Start the variant's deployment if absent; return once it has succeeded (its
        autoscale setting written), else raise `EndpointUnavailable` / `TrafficRefused`."""
        name = deployment_name(variant)
        if current is None:
            with endpoint_call(f"deploying {variant} on {endpoint.name}"):
                self._ml.online_deployments.begin_create_or_update(self._deployment(model, variant))
            raise EndpointUnavailable(f"deploying {name} on {endpoint.name}: started")
        state = provisioning(current)
        if state in BUSY:
            raise EndpointUnavailable(f"deployment {name} on {endpoint.name} is {state}")
        if state != "succeeded":
            raise TrafficRefused(f"deployment {name} on {endpoint.name} is {state}")
        ensure_autoscale(self._clients, self._settings, name, str(endpoint.location))

    def _deployment(self, model: str, variant: str) -> Any:
        from azure.ai.ml.entities import (
            DataCollector,
            DeploymentCollection,
            ManagedOnlineDeployment,
        )

        settings = self._settings
        capture = settings.capture
        collector = None
        if capture is not None and capture.enabled:
            collector = DataCollector(
                collections={name: DeploymentCollection(enabled="true") for name in COLLECTIONS},
                sampling_rate=capture.sampling_percentage / 100,
            )
        version = variant.removeprefix("v")
        return ManagedOnlineDeployment(
            name=deployment_name(variant),
            endpoint_name=settings.endpoint_name,
            model=f"azureml:{model}:{version}",
            environment=settings.serving_environment,
            instance_type=settings.serving_instance_type,
            instance_count=settings.serving_instance_count,
            data_collector=collector,
            tags={**settings.tags, "retrain.variant": variant},
        )

    def _state(self, model: str, endpoint: Any) -> EndpointState:
        tags = dict(endpoint.tags or {})
        weights = our_variants(endpoint.traffic or {})
        mirrored = [v for v, p in our_variants(endpoint.mirror_traffic or {}).items() if p]
        changed = tags.get(CHANGED_AT_TAG)
        return EndpointState(
            model=model,
            weights=weights,
            shadow=mirrored[0] if mirrored else None,
            generation=int(tags.get(GENERATION_TAG, "0")),
            change_id=tags.get(CHANGE_TAG),
            updated_at=datetime.fromisoformat(changed) if changed else datetime.now(UTC),
            variants={v: v.removeprefix("v") for v in {*weights, *mirrored}},
        )
