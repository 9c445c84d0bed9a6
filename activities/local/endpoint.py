"""The local endpoint's traffic (`retrain serve`): the local backend's `ServingBackend`."""

from __future__ import annotations

import httpx

from activities.ports import EndpointUnavailable, TrafficRefused
from workflows.rollout.models import EndpointState, TrafficChange


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
