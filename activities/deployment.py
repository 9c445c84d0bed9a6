"""Traffic on a serving endpoint (rollout stages and rollbacks), behind the `ServingBackend`
Protocol, and its activities.

`LocalEndpoint` drives `retrain serve MODEL` through its admin API. Every change is read back
from the endpoint after it is set: an endpoint that does not report what was asked fails the
activity loudly (non-retryable), since a rollout must never go on believing a split that is
not live. Changes are idempotent by `change_id` on the endpoint, so a retried activity (or a
worker restarted mid-call) never applies a stage twice.
"""

from __future__ import annotations

from typing import Protocol

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows.rollout_models import EndpointState, TrafficChange

TRAFFIC_REFUSED = "TrafficRefused"
TRAFFIC_MISMATCH = "TrafficMismatch"


class EndpointUnavailable(Exception):
    """The endpoint could not be reached or answered 5xx: worth retrying."""


class TrafficRefused(Exception):
    """The endpoint refused the change (4xx): retrying the same change cannot help."""


class ServingBackend(Protocol):
    def set_traffic(self, change: TrafficChange) -> EndpointState:
        """Apply the change (idempotent by change_id) and return what the endpoint reports."""
        ...

    def read_traffic(self, model: str, endpoint_url: str) -> EndpointState: ...

    def flush_capture(self, endpoint_url: str) -> None:
        """Make the endpoint write its buffered capture, so a window read next is complete."""
        ...


class LocalEndpoint:
    """The admin API of the local endpoint (`serving/app.py`)."""

    def __init__(self, timeout: float = 10.0) -> None:
        self._timeout = timeout

    def set_traffic(self, change: TrafficChange) -> EndpointState:
        body = {"weights": change.weights, "shadow": change.shadow, "change_id": change.change_id}
        return self._state(change.model, "PUT", change.endpoint_url, json=body)

    def read_traffic(self, model: str, endpoint_url: str) -> EndpointState:
        return self._state(model, "GET", endpoint_url)

    def flush_capture(self, endpoint_url: str) -> None:
        # A flush first waits (up to 10 s) for mirrored calls still running: more room, yet
        # within the analysis activity's 30 s heartbeat timeout.
        self._call("POST", f"{endpoint_url.rstrip('/')}/admin/flush", timeout=20.0)

    def _state(
        self, model: str, method: str, url: str, json: object | None = None
    ) -> EndpointState:
        response = self._call(method, f"{url.rstrip('/')}/admin/weights", json=json)
        state = EndpointState.model_validate_json(response.content)
        if state.model != model:
            raise TrafficRefused(f"the endpoint at {url} serves {state.model!r}, not {model!r}")
        return state

    def _call(
        self, method: str, url: str, json: object | None = None, timeout: float | None = None
    ) -> httpx.Response:
        try:
            response = httpx.request(method, url, json=json, timeout=timeout or self._timeout)
        except httpx.HTTPError as exc:
            raise EndpointUnavailable(
                f"endpoint {url} unreachable ({type(exc).__name__}: {exc}); is "
                "`retrain serve MODEL` running there?"
            ) from exc
        if response.status_code >= 500:
            raise EndpointUnavailable(f"{method} {url}: {response.status_code} {response.text}")
        if response.status_code >= 400:
            raise TrafficRefused(f"{method} {url}: {response.status_code} {_error(response)}")
        return response


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text


def live_split(weights: dict[str, int]) -> dict[str, int]:
    """Weights as compared: variants at 0% are not part of the split."""
    return {variant: weight for variant, weight in sorted(weights.items()) if weight > 0}


def check_reported(change: TrafficChange, state: EndpointState) -> None:
    """Raise unless the endpoint reports exactly the requested split and shadow."""
    wanted, reported = live_split(change.weights), live_split(state.weights)
    if wanted != reported or change.shadow != state.shadow:
        raise ApplicationError(
            f"endpoint reports weights {reported} shadow {state.shadow} (generation "
            f"{state.generation}, change {state.change_id}) after setting {wanted} shadow "
            f"{change.shadow} ({change.change_id}): traffic is not what the rollout set",
            type=TRAFFIC_MISMATCH,
            non_retryable=True,
        )


class DeploymentActivities:
    def __init__(self, backend: ServingBackend) -> None:
        self._backend = backend

    @activity.defn(name="shift_traffic")
    def shift_traffic(self, change: TrafficChange) -> EndpointState:
        """Set the split, then read it back (a separate call) and insist it is what was set."""
        try:
            self._backend.set_traffic(change)
            state = self._backend.read_traffic(change.model, change.endpoint_url)
        except TrafficRefused as exc:
            raise ApplicationError(str(exc), type=TRAFFIC_REFUSED, non_retryable=True) from exc
        check_reported(change, state)
        activity.logger.info(
            "%s: traffic %s shadow %s (generation %d)",
            change.model,
            live_split(state.weights),
            state.shadow,
            state.generation,
        )
        return state
