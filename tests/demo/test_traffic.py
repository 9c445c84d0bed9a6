"""The demo's traffic generator against a stand-in endpoint (a tiny Starlette app on uvicorn).

The stand-in speaks the `retrain serve` contract (`POST /invocations`, `POST /feedback`) and can
be told to fail; it records every call with the event-loop time it arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from starters.demo.synthetic import POST_DRIFT_FUNCTION, PRE_DRIFT_FUNCTION
from starters.demo.traffic import (
    BAD_RESPONSE,
    CHUNK_ROWS,
    CONNECTION_ERROR,
    MAX_FEEDBACK_BATCH,
    RowSource,
    TrafficGenerator,
    TrafficRow,
)

# Fast enough for a test, slow enough for the stand-in on a 2-core machine.
RATE = 200.0


@dataclass
class StandIn:
    """The endpoint double. `invocation_status(n)` / `feedback_status(n)` pick the answer of the
    n-th call (0-based): 200 answers normally, "garbage" a 200 whose body is not JSON."""

    invocation_status: Callable[[int], int | str] = lambda n: 200
    feedback_status: Callable[[int], int] = lambda n: 200
    invocations: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    feedback: list[tuple[float, list[dict[str, Any]]]] = field(default_factory=list)
    feedback_calls: int = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/invocations", self.invoke, methods=["POST"]),
                Route("/feedback", self.post_feedback, methods=["POST"]),
            ]
        )

    async def invoke(self, request: Request) -> Response:
        body = await request.json()
        assert set(body) == {"features", "request_id"}
        status = self.invocation_status(len(self.invocations))
        self.invocations.append((asyncio.get_running_loop().time(), body))
        if status == "garbage":
            return PlainTextResponse("not json")
        if status != 200:
            return JSONResponse({"error": "stand-in failure"}, status_code=int(status))
        answer = {
            "request_id": body["request_id"],
            "variant": "v1" if len(self.invocations) % 4 else "v2",
            "version": "1",
            "prediction": 1,
            "score": 0.7,
        }
        return JSONResponse(answer)

    async def post_feedback(self, request: Request) -> Response:
        body = await request.json()
        status = self.feedback_status(self.feedback_calls)
        self.feedback_calls += 1
        if status != 200:
            return JSONResponse({"error": "stand-in failure"}, status_code=status)
        labels = body["labels"]
        assert 1 <= len(labels) <= MAX_FEEDBACK_BATCH
        self.feedback.append((asyncio.get_running_loop().time(), labels))
        return JSONResponse({"accepted": len(labels)})

    @property
    def labels(self) -> dict[str, int]:
        return {item["request_id"]: item["label"] for _, batch in self.feedback for item in batch}


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # pytest owns the process's signal handlers.
        yield


def listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@contextlib.asynccontextmanager
async def serving(stand_in: StandIn, port: int = 0) -> AsyncIterator[str]:
    sock = listening_socket(port)
    config = uvicorn.Config(stand_in.app(), log_level="warning", lifespan="off")
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the stand-in did not start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def expected_rows(seed: int, count: int, label_share: float, prefix: str) -> list[TrafficRow]:
    source = RowSource(seed, PRE_DRIFT_FUNCTION, label_share, prefix)
    return [source.next_row() for _ in range(count)]


def generator(url: str, **options: Any) -> TrafficGenerator:
    settings: dict[str, Any] = {
        "rate": RATE,
        "concurrency": 4,
        "label_delay": 0.2,
        "feedback_interval": 0.05,
        "seed": 3,
        "id_prefix": "t",
    }
    return TrafficGenerator(url, **(settings | options))


# ---- rows ------------------------------------------------------------------------------------


def agrawal_label(function: int, features: dict[str, Any]) -> int:
    age, elevel = features["age"], features["elevel"]
    if function == PRE_DRIFT_FUNCTION:
        return int(age < 40 or age >= 60)
    assert function == POST_DRIFT_FUNCTION
    if age < 40:
        return int(elevel in (0, 1))
    return int(elevel in (1, 2, 3)) if age < 60 else int(elevel in (2, 3, 4))


def test_rows_are_deterministic_and_labels_follow_the_current_concept() -> None:
    count = 3 * CHUNK_ROWS
    first, second = RowSource(5, 0, 0.3, "a"), RowSource(5, 0, 0.3, "a")
    rows = [first.next_row() for _ in range(count)]
    # The concept changes mid-chunk: the features stay those of the seed, the labels change.
    switched = [second.next_row() for _ in range(count // 2)]
    second.function = POST_DRIFT_FUNCTION
    switched += [second.next_row() for _ in range(count - count // 2)]
    assert [r.features for r in switched] == [r.features for r in rows]
    assert [r.labelled for r in switched] == [r.labelled for r in rows]
    assert [r.request_id for r in rows[:2]] == ["a-0", "a-1"]
    assert 0.15 < sum(r.labelled for r in rows) / count < 0.45
    assert rows != [RowSource(6, 0, 0.3, "a").next_row() for _ in range(count)]
    old = [agrawal_label(PRE_DRIFT_FUNCTION, r.features) == r.label for r in rows]
    new = [agrawal_label(POST_DRIFT_FUNCTION, r.features) == r.label for r in switched[96:]]
    # 5% label noise: most labels follow the concept, not all.
    assert sum(old) / len(old) > 0.88
    assert sum(new) / len(new) > 0.88
    assert set(rows[0].features) == {
        "salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan"
    }  # fmt: skip


# ---- against the stand-in ----------------------------------------------------------------------


async def test_sends_max_requests_at_the_rate_and_labels_late() -> None:
    stand_in = StandIn()
    requests, share = 120, 0.5
    async with serving(stand_in) as url:
        traffic = generator(url, max_requests=requests, label_share=share)
        started = time.monotonic()
        async with traffic:
            await asyncio.wait_for(traffic.wait(), 30)
        elapsed = time.monotonic() - started
        stats = traffic.stats
    expected = expected_rows(3, requests, share, "t")
    assert (stats.sent, stats.ok, stats.failed) == (requests, requests, 0)
    assert sum(stats.variants.values()) == requests and set(stats.variants) == {"v1", "v2"}
    # Concurrent requests may arrive out of order: compared by request id.
    received = {body["request_id"]: body["features"] for _, body in stand_in.invocations}
    assert len(stand_in.invocations) == len(received) == requests
    assert received == {row.request_id: row.features for row in expected}
    # The share's true labels, each posted at least `label_delay` after its answer, in batches.
    truth = {row.request_id: row.label for row in expected if row.labelled}
    assert 40 < len(truth) < 80
    assert stand_in.labels == truth
    assert (stats.labelled, stats.labels_pending, stats.labels_dropped) == (len(truth), 0, 0)
    assert len(stand_in.feedback) < len(truth)
    sent_at = {body["request_id"]: at for at, body in stand_in.invocations}
    assert all(
        at - sent_at[item["request_id"]] >= 0.19
        for at, batch in stand_in.feedback
        for item in batch
    )
    # Paced, not a burst: the rate is a ceiling (generous lower bound only).
    assert elapsed >= 0.95 * (requests - 1) / RATE


async def test_counts_endpoint_errors_and_keeps_going() -> None:
    answers: dict[int, int | str] = {0: 500, 1: 400, 2: "garbage", 3: 404}
    stand_in = StandIn(invocation_status=lambda n: answers.get(n % 6, 200))
    async with serving(stand_in) as url:
        traffic = generator(url, max_requests=60, label_share=1.0)
        async with traffic:
            await asyncio.wait_for(traffic.wait(), 30)
    stats = traffic.stats
    assert (stats.sent, stats.ok) == (60, 20)
    assert stats.errors == {"500": 10, "400": 10, "404": 10, BAD_RESPONSE: 10}
    # Only answered requests get feedback: the endpoint knows no other request id.
    assert stats.labelled == 20 == len(stand_in.labels)
    answered = {body["request_id"] for n, (_, body) in enumerate(stand_in.invocations) if n % 6 > 3}
    assert set(stand_in.labels) == answered


async def test_feedback_is_retried_on_5xx_and_dropped_on_4xx() -> None:
    stand_in = StandIn(feedback_status=lambda n: {0: 503, 1: 503}.get(n, 200))
    async with serving(stand_in) as url:
        traffic = generator(url, max_requests=30, label_share=1.0, label_delay=0.05)
        async with traffic:
            await asyncio.wait_for(traffic.wait(), 30)
    stats = traffic.stats
    assert stats.label_errors == {"503": 2}
    assert (stats.labelled, stats.labels_dropped) == (30, 0)
    assert len(stand_in.labels) == 30

    refused = StandIn(feedback_status=lambda n: 404)
    async with serving(refused) as url:
        traffic = generator(url, max_requests=10, label_share=1.0, label_delay=0.05)
        async with traffic:
            await asyncio.wait_for(traffic.wait(), 30)
    stats = traffic.stats
    assert (stats.ok, stats.labelled, stats.labels_dropped) == (10, 0, 10)
    assert stats.label_errors["404"] >= 1


async def test_survives_a_refused_connection_and_an_endpoint_restart() -> None:
    closed = listening_socket()  # bound, never listening: connections are refused
    port = closed.getsockname()[1]
    stand_in = StandIn()
    traffic = generator(f"http://127.0.0.1:{port}", label_share=1.0, label_delay=0.05)
    try:
        async with traffic:
            await until(lambda: traffic.stats.errors[CONNECTION_ERROR] >= 10)
            assert traffic.stats.ok == 0 and traffic.running
            closed.close()
            async with serving(stand_in, port):
                await until(lambda: traffic.stats.ok >= 20 and traffic.stats.labelled >= 10)
            # Down again (a restart): errors while it is away, then answers again.
            refused = traffic.stats.errors[CONNECTION_ERROR]
            await until(lambda: traffic.stats.errors[CONNECTION_ERROR] > refused + 5)
            ok = traffic.stats.ok
            async with serving(stand_in, port):
                await until(lambda: traffic.stats.ok >= ok + 20)
                assert traffic.running
    finally:
        closed.close()
    stats = traffic.stats
    assert not traffic.running
    assert stats.sent == stats.ok + stats.failed
    assert set(stats.errors) <= {CONNECTION_ERROR, "timeout"}


async def test_stop_posts_pending_labels_at_once_and_ends_cleanly() -> None:
    stand_in = StandIn()
    async with serving(stand_in) as url:
        # Labels would wait a minute: stopping posts them now.
        traffic = generator(url, label_share=1.0, label_delay=60.0)
        await traffic.start()
        await until(lambda: traffic.stats.ok >= 20)
        assert traffic.stats.labelled == 0 and traffic.stats.labels_pending >= 20
        started = time.monotonic()
        await asyncio.wait_for(traffic.stop(), 10)
        assert time.monotonic() - started < 5
        await traffic.stop()  # idempotent
        stats = traffic.stats
        sent = len(stand_in.invocations)
        await asyncio.sleep(0.1)
        assert len(stand_in.invocations) == sent  # nothing after stop
    assert not traffic.running
    assert stats.sent == stats.ok == stats.labelled == len(stand_in.labels) == sent
    assert stats.labels_pending == 0
    with pytest.raises(RuntimeError):
        await traffic.start()


async def test_stop_while_the_endpoint_is_down_gives_up_its_labels() -> None:
    stand_in = StandIn()
    async with serving(stand_in) as url:
        traffic = generator(url, label_share=1.0, label_delay=60.0)
        await traffic.start()
        await until(lambda: traffic.stats.ok >= 10)
    await until(lambda: traffic.stats.errors[CONNECTION_ERROR] >= 5)
    await asyncio.wait_for(traffic.stop(), 10)
    stats = traffic.stats
    assert stats.labelled == 0 and stats.labels_pending == 0
    assert stats.labels_dropped == stats.ok >= 10
    assert stats.label_errors == {CONNECTION_ERROR: 1}  # one final attempt, one batch


def test_refuses_bad_settings() -> None:
    for options in ({"rate": 0}, {"label_share": 1.5}, {"feedback_batch": MAX_FEEDBACK_BATCH + 1}):
        with pytest.raises(ValueError):
            TrafficGenerator("http://127.0.0.1:1", **options)
