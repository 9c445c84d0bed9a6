"""Every HTTP route of the gateway and of the endpoint under fuzzed requests: each answers with a
status it documents and a JSON error saying why (never a 500, never a traceback), refusals
store nothing and change nothing, and no answer echoes a credential."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activities.local.capture import capture_dir
from serving.config import EndpointConfig
from starters.gateway.auth import SOURCES
from tests.fuzz.strategies import HOSTILE_BYTES, JSON
from tests.support.endpoint_harness import ADMIN_HEADERS, running_endpoint, train_versions
from tests.support.gateway_harness import (
    TOKEN,
    Gateway,
    bearer,
    gateway,
    object_created,
    register_sagemaker_model,
    signed,
    stored,
    temporal_down,
)

FUZZ_EXAMPLES = 60
COUNTS: Counter[str] = Counter()
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
GATEWAY_STATUSES = {200, 202, 400, 401, 413}
ENDPOINT_STATUSES = {200, 400, 401, 404, 413, 422, 503}

# Bodies: JSON of any shape, hostile bytes, near-misses of the real payloads.
BODIES = st.one_of(
    JSON.map(lambda value: json.dumps(value).encode()),
    st.sampled_from(HOSTILE_BYTES),
    st.binary(max_size=200),
    st.sampled_from(
        [
            json.dumps(object_created("churn-data", "labelled/x", "e"))
            .replace('"size": 52143', '"size": "inf"')
            .encode(),
            json.dumps({"version": "4", "alerts": [{"status": []}]}).encode(),
            json.dumps({"Type": "Notification", "Message": "[" * 500}).encode(),
            json.dumps({"message": {"data": "!!!not base64", "attributes": {}}}).encode(),
            json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": []}]}).encode(),
            b'{"time": 1e20, "source": "aws.s3", "detail-type": "Object Created"}',
        ]
    ),
)
HEADERS = st.sampled_from(
    [
        "bearer",
        "bearer",
        "none",
        "wrong",
        "bare token",
        "basic garbage",
        "signed",
        "stale signature",
    ]
)


def gateway_headers(kind: str, body: bytes) -> dict[str, str]:
    return {
        "bearer": bearer(),
        "none": {},
        "wrong": bearer("wrong-token"),
        "bare token": {"Authorization": TOKEN},
        "basic garbage": {"Authorization": "Basic %%%"},
        "signed": signed(body),
        "stale signature": signed(body, at=0),
    }[kind]


@pytest_asyncio.fixture
async def offline(home: Path) -> AsyncIterator[Gateway]:
    register_sagemaker_model(home, "churn", "s3://churn-data/labelled")
    async with gateway(home, temporal_down()) as running:
        yield running
    print(f"\nfuzzed gateway requests: {dict(sorted(COUNTS.items()))}")


@FUZZ
@given(
    source=st.sampled_from(SOURCES),
    body=BODIES,
    headers=HEADERS,
    model=st.sampled_from([None, "churn", "Not A Name", "x" * 300]),
)
async def test_gateway_event_routes(
    offline: Gateway, source: str, body: bytes, headers: str, model: str | None
) -> None:
    waiting_before, dead_before = stored(offline.home)
    params = {"model": model} if model is not None else {}
    if source == "pubsub" and headers == "bearer":
        params["token"] = TOKEN
    answer = await offline.http.post(
        f"/v1/events/{source}",
        content=body,
        headers=gateway_headers(headers, body),
        params=params,
    )
    COUNTS[f"{source} {answer.status_code}"] += 1
    assert answer.status_code in GATEWAY_STATUSES, (source, body[:200], answer.text)
    assert TOKEN not in answer.text
    if answer.status_code >= 400:
        assert answer.json()["error"], answer.text
        assert stored(offline.home) == (waiting_before, dead_before)


@FUZZ
@given(
    path=st.sampled_from(["/healthz", "/metrics", "/v1/events", "/v1/events/kinesis", "/x"]),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
)
async def test_gateway_other_routes(offline: Gateway, path: str, method: str) -> None:
    answer = await offline.http.request(method, path, headers=bearer())
    COUNTS[f"{method} {path} {answer.status_code}"] += 1
    assert answer.status_code in {200, 404, 405}, (method, path, answer.text)
    if answer.status_code != 200:
        assert answer.json()["error"]


# ---------------------------------------------------------------- the endpoint

MODEL = "fuzz-endpoint"


@pytest.fixture(scope="module")
def endpoint_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("fuzz-endpoint")
    train_versions(home, MODEL, count=2)
    return home


@pytest.fixture(scope="module")
def endpoint(endpoint_home: Path) -> Iterator[tuple[str, Path]]:
    config = EndpointConfig(home=endpoint_home, model=MODEL, seed=1, capture_flush_seconds=600)
    shutil.rmtree(endpoint_home / "endpoints", ignore_errors=True)
    with running_endpoint(config) as url:
        yield url, endpoint_home
    print(f"\nfuzzed endpoint requests: {dict(sorted(ENDPOINT_COUNTS.items()))}")


ENDPOINT_COUNTS: Counter[str] = Counter()
ROUTES = [
    ("POST", "/invocations"),
    ("POST", "/feedback"),
    ("PUT", "/admin/weights"),
    ("GET", "/admin/weights"),
    ("POST", "/admin/flush"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
]
ENDPOINT_BODIES = st.one_of(
    BODIES,
    st.sampled_from(
        [
            b'{"features": {"age": "old"}}',
            b'{"features": {}, "request_id": "' + b"x" * 500 + b'"}',
            b'{"labels": [{"request_id": "never-seen", "label": 1}]}',
            b'{"request_id": "r", "label": true}',
            b'{"weights": {"v1": 0, "v2": 100}, "change_id": "attack"}',
            b'{"weights": {"v1": 50.5, "v2": 49.5}, "change_id": "c"}',
            b'{"weights": {"v9": 100}, "change_id": "c"}',
            b'{"weights": {"v1": 100}, "shadow": "v1", "change_id": "c"}',
        ]
    ),
)


@FUZZ
@given(
    route=st.sampled_from(ROUTES),
    body=ENDPOINT_BODIES,
    admin=st.sampled_from(["none", "wrong", "token"]),
)
def test_endpoint_routes(
    endpoint: tuple[str, Path], route: tuple[str, str], body: bytes, admin: str
) -> None:
    url, _ = endpoint
    method, path = route
    headers = {"none": {}, "wrong": {"Authorization": "Bearer guess"}, "token": ADMIN_HEADERS}
    before = httpx.get(f"{url}/admin/weights", headers=ADMIN_HEADERS).json()
    answer = httpx.request(method, f"{url}{path}", content=body, headers=headers[admin], timeout=30)
    ENDPOINT_COUNTS[f"{method} {path} {answer.status_code}"] += 1
    assert answer.status_code in ENDPOINT_STATUSES, (method, path, body[:200], answer.text)
    assert "guess" not in answer.text
    if answer.status_code >= 400 and path != "/metrics":
        assert answer.json()["error"], answer.text
    after = httpx.get(f"{url}/admin/weights", headers=ADMIN_HEADERS).json()
    if not (method == "PUT" and answer.status_code == 200):
        assert after == before, (method, path, body[:200])
    if path.startswith("/admin") and admin != "token":
        assert answer.status_code == 401


def test_the_endpoint_capture_dir_exists(endpoint: tuple[str, Path]) -> None:
    """The fuzzed answers were captured (the log at least), not lost."""
    _, home = endpoint
    from activities.specs import SpecStore

    spec = SpecStore(home).get(MODEL)
    assert spec is not None
    assert (capture_dir(home, spec) / ".wal").is_dir()
