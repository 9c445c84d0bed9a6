"""The local endpoint's traffic (`retrain serve`): the local backend's `ServingBackend`.

The endpoint's admin API (`/admin/*`: the weights, the capture flush) takes a bearer token:
`RETRAIN_ENDPOINT_ADMIN_TOKEN` (or the file `RETRAIN_ENDPOINT_ADMIN_TOKEN_FILE` names) when set
for both the endpoint and the workers, else the one the endpoint writes at its first start to
`<home>/endpoints/<model>/admin-token` (mode 0600), which workers sharing the home read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import httpx

from activities.ports import EndpointUnavailable, TrafficRefused
from workflows.rollout.models import EndpointState, TrafficChange

ADMIN_TOKEN_ENV = "RETRAIN_ENDPOINT_ADMIN_TOKEN"


def admin_token_file(home: Path, model: str) -> Path:
    return home / "endpoints" / model / "admin-token"


def admin_token(home: Path, model: str, create: bool = False) -> str | None:
    """The admin token of `model`'s endpoint: from the environment, else its file (written
    now, at random, when `create` and there is none)."""
    direct = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
    if direct:
        return direct
    named = os.environ.get(f"{ADMIN_TOKEN_ENV}_FILE")
    if named:
        return Path(named).read_text(encoding="utf-8").strip() or None
    path = admin_token_file(home, model)
    with contextlib.suppress(FileNotFoundError):
        return path.read_text(encoding="utf-8").strip() or None
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process wrote it first: use theirs
        return path.read_text(encoding="utf-8").strip() or None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    return token


class LocalEndpoint:
    """The admin API of the local endpoint (`serving/app.py`)."""

    def __init__(self, home: Path | None = None, timeout: float = 10.0) -> None:
        self._home = home
        self._timeout = timeout
        # endpoint url -> the model it serves (its /healthz says), to find the admin token.
        self._models: dict[str, str] = {}

    def set_traffic(self, change: TrafficChange) -> EndpointState:
        body = {"weights": change.weights, "shadow": change.shadow, "change_id": change.change_id}
        return self._state(change.model, "PUT", change.endpoint_url, json=body)

    def read_traffic(self, model: str, endpoint_url: str) -> EndpointState:
        return self._state(model, "GET", endpoint_url)

    def flush_capture(self, endpoint_url: str) -> None:
        # A flush first waits (up to 10 s) for mirrored calls still running: more room, yet
        # within the analysis activity's 30 s heartbeat timeout.
        model = self._model_at(endpoint_url)
        self._call(model, "POST", f"{endpoint_url.rstrip('/')}/admin/flush", timeout=20.0)

    def _model_at(self, endpoint_url: str) -> str:
        url = endpoint_url.rstrip("/")
        if url not in self._models:
            model = self._call(None, "GET", f"{url}/healthz").json().get("model")
            if not isinstance(model, str):
                raise EndpointUnavailable(f"{url}/healthz does not name its model")
            self._models[url] = model
        return self._models[url]

    def _state(
        self, model: str, method: str, url: str, json: object | None = None
    ) -> EndpointState:
        response = self._call(model, method, f"{url.rstrip('/')}/admin/weights", json=json)
        state = EndpointState.model_validate_json(response.content)
        self._models[url.rstrip("/")] = state.model
        if state.model != model:
            raise TrafficRefused(f"the endpoint at {url} serves {state.model!r}, not {model!r}")
        return state

    def _call(
        self,
        model: str | None,
        method: str,
        url: str,
        json: object | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        token = None
        if model is not None and self._home is not None:
            token = admin_token(self._home, model)
        token = token or os.environ.get(ADMIN_TOKEN_ENV)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = httpx.request(
                method, url, json=json, headers=headers, timeout=timeout or self._timeout
            )
        except httpx.HTTPError as exc:
            raise EndpointUnavailable(
                f"endpoint {url} unreachable ({type(exc).__name__}: {exc}); is "
                "`retrain serve MODEL` running there?"
            ) from exc
        if response.status_code >= 500:
            raise EndpointUnavailable(f"{method} {url}: {response.status_code} {response.text}")
        if response.status_code == 401:
            raise TrafficRefused(
                f"{method} {url}: 401 {_error(response)}: the worker needs the endpoint's admin "
                f"token ({ADMIN_TOKEN_ENV}, or a shared RETRAIN_HOME)"
            )
        if response.status_code >= 400:
            raise TrafficRefused(f"{method} {url}: {response.status_code} {_error(response)}")
        return response


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text
