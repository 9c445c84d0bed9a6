"""Traffic on a Vertex AI endpoint: the `ServingBackend` of the vertex backend.

One endpoint per model (`settings.endpoint_name`, its display name; created when absent, with
an id derived from that name so a retried creation finds the first one). Each registry version
is a deployed model whose display name is its variant (`v3`) and whose id is derived from the
model and variant, so a retried deployment collides with the one in flight instead of adding a
second copy. A change deploys the variants it names that are missing (0% traffic), then sets
the whole split and the change marker in one PATCH (traffic split + labels), so the split and
"this change was applied" can never disagree. The endpoint logs requests and responses to
BigQuery (`predictRequestResponseLoggingConfig` from the settings' capture, set at creation and
by the next PATCH of an endpoint without it); deployed models autoscale on the settings'
metric specs (CPU utilisation, accelerator duty cycle, in percent).

Idempotency: the endpoint's labels hold the last change id (sanitised to a label value, with a
digest so distinct ids never collide) and the generation, incremented only by a new change id;
`EndpointState.change_id` is that label value. A deployment takes minutes on Vertex, longer
than the traffic activity may run: it is started, and the activity fails retryably
(`EndpointUnavailable`) until the deployed model is there. Vertex has no shadow variants: a
change with a shadow is refused. Variants left at 0% stay deployed (a rollback needs them);
`retire` undeploys one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import google.cloud.aiplatform_v1 as aiplatform_v1
from google.api_core import exceptions as gexc
from google.protobuf import field_mask_pb2

from activities.gcp.clients import GcpClients
from activities.gcp.errors import gcp_call
from activities.ports import EndpointUnavailable, TrafficRefused
from workflows.rollout.models import EndpointState, TrafficChange
from workflows.spec.vertex import VertexSettings

MODEL_LABEL = "model"
CHANGE_LABEL = "retrain-change"
GENERATION_LABEL = "retrain-generation"
_VARIANT = re.compile(r"^v[1-9][0-9]{0,8}$")


def label_value(text: str) -> str:
    """`text` as a label value ([a-z0-9_-], at most 63): readable, and unique by a digest."""
    clean = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{clean[:46]}-{digest}" if clean else digest


def endpoint_id(display_name: str) -> str:
    """The id we create the endpoint with: a letter first, so up to 63 of [a-z0-9-]."""
    return f"retrain-{hashlib.sha256(display_name.encode()).hexdigest()[:24]}"


def deployed_model_id(model: str, variant: str) -> str:
    """Vertex takes 1 to 10 digits; ten derived from the model and variant, leading digit 1-9."""
    digest = int(hashlib.sha256(f"{model}/{variant}".encode()).hexdigest(), 16)
    return str(1_000_000_000 + digest % 9_000_000_000)


def find_endpoint(client: Any, settings: VertexSettings) -> Any | None:
    """The endpoint named `settings.endpoint_name` (the oldest, should there be several)."""
    parent = f"projects/{settings.project}/locations/{settings.location}"
    with endpoint_call(f"listing Vertex endpoints named {settings.endpoint_name!r}"):
        found = list(
            client.list_endpoints(
                request={"parent": parent, "filter": f'display_name="{settings.endpoint_name}"'}
            )
        )
    found.sort(key=lambda endpoint: (endpoint.create_time, endpoint.name))
    return found[0] if found else None


def deployed_variants(endpoint: Any) -> dict[str, str]:
    """Variant -> deployed model id, for the deployed models that are our variants."""
    return {
        deployed.display_name: deployed.id
        for deployed in endpoint.deployed_models
        if _VARIANT.match(deployed.display_name)
    }


@contextmanager
def endpoint_call(doing: str) -> Iterator[None]:
    """`gcp_call`, except that an endpoint busy with another operation (409) or unavailable (503)
    is `EndpointUnavailable`: retrying later is what helps."""
    with gcp_call(doing):
        try:
            yield
        except (gexc.Conflict, gexc.ServiceUnavailable) as error:
            raise EndpointUnavailable(f"{doing}: {error}") from error


def logging_config(settings: VertexSettings) -> Any | None:
    """The endpoint's request-response logging to BigQuery; None when capture is off."""
    capture = settings.capture
    if capture is None or not capture.enabled:
        return None
    return aiplatform_v1.PredictRequestResponseLoggingConfig(
        enabled=True,
        sampling_rate=capture.sampling_percentage / 100,
        bigquery_destination=aiplatform_v1.BigQueryDestination(
            output_uri=f"bq://{settings.logging_table()}"
        ),
    )


def _logging_matches(endpoint: Any, wanted: Any | None) -> bool:
    if wanted is None:
        return True
    current = endpoint.predict_request_response_logging_config
    return bool(
        current.enabled
        and current.bigquery_destination.output_uri == wanted.bigquery_destination.output_uri
        and abs(current.sampling_rate - wanted.sampling_rate) < 1e-9
    )


def autoscaling_specs(settings: VertexSettings) -> list[Any]:
    """The deployed models' autoscaling metric specs, targets in the metric's own unit."""
    return [
        aiplatform_v1.AutoscalingMetricSpec(metric_name=name, target=target)
        for name, target in sorted(settings.autoscaling.metric_specs().items())
    ]


class VertexEndpoint:
    # Creating an endpoint takes seconds; within the traffic activity's 30 s.
    CREATE_TIMEOUT = 20.0

    def __init__(
        self,
        clients: GcpClients,
        settings: VertexSettings,
        model_resource: Callable[[str, str], str],
    ) -> None:
        self._clients = clients
        self._settings = settings
        self._model_resource = model_resource

    @cached_property
    def _client(self) -> Any:
        return self._clients.endpoints

    def set_traffic(self, change: TrafficChange) -> EndpointState:
        if change.shadow is not None:
            raise TrafficRefused(
                f"Vertex AI endpoints have no shadow variants: cannot shadow {change.shadow} on "
                f"{self._settings.endpoint_name!r}; use a policy without a shadow stage"
            )
        endpoint = self._endpoint(change.model) or self._create(change.model)
        marker = label_value(change.change_id)
        if endpoint.labels.get(CHANGE_LABEL) == marker:
            return self._state(change.model, endpoint)
        variants = deployed_variants(endpoint)
        for variant in sorted(set(change.weights) - set(variants)):
            endpoint = self._deploy(change.model, endpoint, variant)
            variants = deployed_variants(endpoint)
        generation = int(endpoint.labels.get(GENERATION_LABEL, "0")) + 1
        labels = {**endpoint.labels, CHANGE_LABEL: marker, GENERATION_LABEL: str(generation)}
        update = aiplatform_v1.Endpoint(
            name=endpoint.name,
            traffic_split={ids: change.weights.get(v, 0) for v, ids in variants.items()},
            labels=labels,
        )
        paths = ["traffic_split", "labels"]
        wanted = logging_config(self._settings)
        if wanted is not None and not _logging_matches(endpoint, wanted):
            # An endpoint made before capture was on (or by hand) starts logging with the split.
            update.predict_request_response_logging_config = wanted
            paths.append("predict_request_response_logging_config")
        mask = field_mask_pb2.FieldMask(paths=paths)
        with endpoint_call(f"setting traffic {change.weights} on {endpoint.name}"):
            updated = self._client.update_endpoint(endpoint=update, update_mask=mask)
        return self._state(change.model, updated)

    def read_traffic(self, model: str, endpoint_url: str) -> EndpointState:
        """`endpoint_url` is the local endpoint's: the Vertex endpoint comes from the settings."""
        del endpoint_url
        endpoint = self._endpoint(model)
        if endpoint is None:
            raise TrafficRefused(
                f"no Vertex endpoint named {self._settings.endpoint_name!r} in "
                f"{self._settings.project}/{self._settings.location}"
            )
        return self._state(model, endpoint)

    def flush_capture(self, endpoint_url: str) -> None:
        """Vertex writes its own request logs and metrics: nothing is buffered here."""

    def retire(self, model: str, variant: str) -> None:
        """Undeploy a variant that takes no traffic any more (frees its machines)."""
        endpoint = self._endpoint(model)
        deployed = deployed_variants(endpoint) if endpoint is not None else {}
        if endpoint is None or variant not in deployed:
            return
        if endpoint.traffic_split.get(deployed[variant], 0) > 0:
            raise TrafficRefused(f"{variant} still takes traffic on {endpoint.name}")
        split = {
            ids: weight
            for ids, weight in endpoint.traffic_split.items()
            if ids != deployed[variant]
        }
        with endpoint_call(f"undeploying {variant} from {endpoint.name}"):
            self._client.undeploy_model(
                endpoint=endpoint.name, deployed_model_id=deployed[variant], traffic_split=split
            )

    def _endpoint(self, model: str) -> Any | None:
        endpoint = find_endpoint(self._client, self._settings)
        if endpoint is not None and endpoint.labels.get(MODEL_LABEL) != label_value(model):
            raise TrafficRefused(
                f"the Vertex endpoint {endpoint.name} ({self._settings.endpoint_name!r}) is "
                f"labelled for model {endpoint.labels.get(MODEL_LABEL)!r}, not {model!r}"
            )
        return endpoint

    def _create(self, model: str) -> Any:
        settings = self._settings
        parent = f"projects/{settings.project}/locations/{settings.location}"
        wanted = aiplatform_v1.Endpoint(
            display_name=settings.endpoint_name,
            labels={**settings.labels, MODEL_LABEL: label_value(model)},
            predict_request_response_logging_config=logging_config(settings),
        )
        new_id = endpoint_id(settings.endpoint_name)
        with endpoint_call(f"creating Vertex endpoint {settings.endpoint_name!r}"):
            try:
                operation = self._client.create_endpoint(
                    parent=parent, endpoint=wanted, endpoint_id=new_id
                )
            except gexc.Conflict:
                # A previous attempt created it (an endpoint still being created may not be
                # listed yet): read it.
                return self._client.get_endpoint(name=f"{parent}/endpoints/{new_id}")
            return operation.result(timeout=self.CREATE_TIMEOUT)

    def _deploy(self, model: str, endpoint: Any, variant: str) -> Any:
        """Deploy `variant` at 0% (100% on an empty endpoint, since a split sums to 100) and
        return the endpoint with it, or raise `EndpointUnavailable` while it is deploying."""
        settings = self._settings
        deployed = aiplatform_v1.DeployedModel(
            id=deployed_model_id(model, variant),
            model=self._model_resource(model, variant.removeprefix("v")),
            display_name=variant,
            dedicated_resources=aiplatform_v1.DedicatedResources(
                machine_spec=aiplatform_v1.MachineSpec(machine_type=settings.serving_machine_type),
                min_replica_count=settings.min_replicas,
                max_replica_count=settings.max_replicas,
                autoscaling_metric_specs=autoscaling_specs(settings),
            ),
        )
        current = deployed_variants(endpoint).values()
        split = {ids: endpoint.traffic_split.get(ids, 0) for ids in current}
        split["0"] = 0 if split else 100
        doing = f"deploying {variant} on {endpoint.name}"
        with endpoint_call(doing):
            operation = self._client.deploy_model(
                endpoint=endpoint.name, deployed_model=deployed, traffic_split=split
            )
        raw = operation.operation
        if not raw.done:
            raise EndpointUnavailable(f"{doing}: started ({raw.name}), not ready yet")
        if raw.HasField("error"):
            raise TrafficRefused(f"{doing} failed: {raw.error.message}")
        with endpoint_call(f"reading {endpoint.name}"):
            return self._client.get_endpoint(name=endpoint.name)

    def _state(self, model: str, endpoint: Any) -> EndpointState:
        variants = deployed_variants(endpoint)
        return EndpointState(
            model=model,
            weights={v: int(endpoint.traffic_split.get(ids, 0)) for v, ids in variants.items()},
            generation=int(endpoint.labels.get(GENERATION_LABEL, "0")),
            change_id=endpoint.labels.get(CHANGE_LABEL),
            updated_at=endpoint.update_time,
            variants={variant: variant.removeprefix("v") for variant in variants},
        )
