"""The demo's live traffic: a steady stream of loan applications to the prediction endpoint.

`TrafficGenerator` sends `rate` requests per second (at most `concurrency` in flight) to
`POST /invocations` of a `retrain serve` endpoint, each a row of the demo's Agrawal stream
(`starters.demo.synthetic.generate_rows`, a stream of its own) labelled by the *current* concept,
which the demo switches with `set_concept` when its drift day comes. For a `label_share` of the
answered requests the true label follows `label_delay` seconds later, batched, on
`POST /feedback` (labels arrive late in real life).

It never crashes on the endpoint's behaviour: 4xx/5xx answers, refused connections while the
endpoint restarts, timeouts and malformed bodies are counted (`stats`) and the stream goes on.
Labels whose feedback call fails on the connection or a 5xx are retried on the next tick until
`label_retry_seconds` passed; a 4xx drops their batch (retrying would not help).

Feature rows are a function of the seed and the request's position only (river's Agrawal draws
features independently of its labelling function), so a rerun sends the same features; request
ids carry a per-run token so reruns never collide in the endpoint's capture.

    async with TrafficGenerator("http://127.0.0.1:8081", rate=60, label_share=0.5) as traffic:
        ...
        traffic.set_concept(POST_DRIFT_FUNCTION)
        ...
        print(traffic.stats.line())
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import date
from types import TracebackType
from typing import Any, Self

import httpx
import numpy as np

from starters.demo.synthetic import FEATURES, LABEL, PRE_DRIFT_FUNCTION, generate_rows

# generate_rows' seed stream for live traffic: never the production days (0), the baseline
# holdout (1) or the golden set (2).
TRAFFIC_STREAM = 3
# generate_rows wants a day; for traffic it is only a component of the seed.
_SEED_DAY = date(2000, 1, 1)
# Rows drawn at once: about a second of traffic at the demo's rate, cheap on the CPU.
CHUNK_ROWS = 64
# The endpoint takes at most this many labels per feedback call.
MAX_FEEDBACK_BATCH = 10_000
# After a stall (endpoint saturated, event loop busy) the pacer forgets the backlog beyond this
# rather than bursting to catch up.
MAX_LAG_SECONDS = 1.0
CONNECTION_ERROR = "connection"
TIMEOUT_ERROR = "timeout"
BAD_RESPONSE = "bad_response"


@dataclass
class TrafficStats:
    """Counters the demo prints. `errors` keys: an HTTP status ("500"), "connection",
    "timeout" or "bad_response" (a 2xx whose body is not the expected JSON)."""

    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # Answers per variant (the endpoint's "variant" field).
    variants: Counter[str] = field(default_factory=Counter)
    # Labels the endpoint accepted, labels waiting for their delay (or a retry), labels given up.
    labelled: int = 0
    labels_pending: int = 0
    labels_dropped: int = 0
    label_errors: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def copy(self) -> TrafficStats:
        return TrafficStats(
            sent=self.sent,
            ok=self.ok,
            errors=Counter(self.errors),
            variants=Counter(self.variants),
            labelled=self.labelled,
            labels_pending=self.labels_pending,
            labels_dropped=self.labels_dropped,
            label_errors=Counter(self.label_errors),
        )

    def line(self) -> str:
        """One line for the console: `sent 1200, ok 1180 (v1 900, v2 280), errors 500:20, ...`."""
        variants = ", ".join(f"{name} {count}" for name, count in sorted(self.variants.items()))
        errors = ", ".join(f"{kind}:{count}" for kind, count in sorted(self.errors.items()))
        text = f"sent {self.sent}, ok {self.ok}"
        text += f" ({variants})" if variants else ""
        text += f", errors {errors or 0}, labelled {self.labelled}"
        if self.labels_pending:
            text += f" (+{self.labels_pending} pending)"
        if self.labels_dropped:
            text += f", labels dropped {self.labels_dropped}"
        return text


@dataclass(frozen=True)
class TrafficRow:
    request_id: str
    features: dict[str, Any]
    label: int
    # Whether its label is sent as feedback.
    labelled: bool


@dataclass(frozen=True)
class _PendingLabel:
    due: float  # event-loop time
    request_id: str
    label: int
    first_due: float


class RowSource:
    """Deterministic rows: row n's features depend on (seed, n) only, its label on the concept.

    Rows come in chunks of `CHUNK_ROWS` from `generate_rows` (chunk k is its `part` k); a change
    of concept redraws the current chunk with the new function: same features, new labels.
    """

    def __init__(self, seed: int, function: int, label_share: float, id_prefix: str) -> None:
        self.seed = seed
        self.function = function
        self.label_share = label_share
        self.id_prefix = id_prefix
        self.position = 0
        self._chunk: tuple[int, int, list[dict[str, Any]], list[int], list[bool]] | None = None

    def next_row(self) -> TrafficRow:
        index, offset = divmod(self.position, CHUNK_ROWS)
        if self._chunk is None or self._chunk[:2] != (index, self.function):
            self._chunk = (index, self.function, *self._draw(index))
        _, _, features, labels, labelled = self._chunk
        row = TrafficRow(
            request_id=f"{self.id_prefix}-{self.position}",
            features=features[offset],
            label=labels[offset],
            labelled=labelled[offset],
        )
        self.position += 1
        return row

    def _draw(self, index: int) -> tuple[list[dict[str, Any]], list[int], list[bool]]:
        table = generate_rows(
            _SEED_DAY,
            CHUNK_ROWS,
            function=self.function,
            seed=self.seed,
            stream=TRAFFIC_STREAM,
            part=index,
        )
        # Which rows get feedback: its own generator, so it does not depend on the concept.
        chooser = np.random.default_rng([self.seed, TRAFFIC_STREAM, index])
        labelled = (chooser.random(CHUNK_ROWS) < self.label_share).tolist()
        features: list[dict[str, Any]] = table.select(list(FEATURES)).to_pylist()
        labels = [int(label) for label in table.column(LABEL).to_pylist()]
        return features, labels, labelled


class TrafficGenerator:
    """Steady request traffic plus delayed label feedback; an async context manager.

    `max_requests` ends the stream by itself after that many requests (`wait()` returns once
    they are answered and their labels posted); otherwise it runs until `stop()`. Pass `client`
    to use your own `httpx.AsyncClient` (its base URL is ignored: `url` is used). Request ids
    are `<id_prefix>-<n>` (default prefix `traffic-<random>`); the endpoint accepts letters,
    digits and `._:-`, up to 128 characters.
    """

    def __init__(
        self,
        url: str,
        *,
        rate: float = 60.0,
        concurrency: int = 8,
        label_share: float = 0.5,
        label_delay: float = 2.0,
        seed: int = 0,
        function: int = PRE_DRIFT_FUNCTION,
        max_requests: int | None = None,
        timeout: float = 5.0,
        feedback_interval: float = 0.5,
        feedback_batch: int = 1_000,
        label_retry_seconds: float = 60.0,
        id_prefix: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if rate <= 0 or concurrency < 1:
            raise ValueError("rate must be positive and concurrency at least 1")
        if not 0 <= label_share <= 1:
            raise ValueError(f"label_share must be within [0, 1], not {label_share}")
        if not 1 <= feedback_batch <= MAX_FEEDBACK_BATCH:
            raise ValueError(f"feedback_batch must be within [1, {MAX_FEEDBACK_BATCH}]")
        self.url = url.rstrip("/")
        self.rate = rate
        self.concurrency = concurrency
        self.label_delay = label_delay
        self.max_requests = max_requests
        self.timeout = timeout
        self.feedback_interval = feedback_interval
        self.feedback_batch = feedback_batch
        self.label_retry_seconds = label_retry_seconds
        prefix = id_prefix or f"traffic-{uuid.uuid4().hex[:8]}"
        self._rows = RowSource(seed, function, label_share, prefix)
        self._stats = TrafficStats()
        self._client = client
        self._owns_client = client is None
        self._pending: deque[_PendingLabel] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._stopping = asyncio.Event()
        self._requests_done = False
        self._pacer: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # ---- control ------------------------------------------------------------------------------

    @property
    def stats(self) -> TrafficStats:
        """A snapshot of the counters."""
        snapshot = self._stats.copy()
        snapshot.labels_pending = len(self._pending)
        return snapshot

    @property
    def concept(self) -> int:
        return self._rows.function

    def set_concept(self, function: int) -> None:
        """Label the following requests with Agrawal `function` (e.g. `concept_on(day, ...)`)."""
        self._rows.function = function

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("this traffic generator was already started")
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                limits=httpx.Limits(max_connections=self.concurrency + 1),
            )
        self._task = asyncio.create_task(self._run(), name="traffic")

    async def wait(self) -> None:
        """Until the stream ended (`max_requests` reached, or stopped) and labels are posted."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Stop sending, let in-flight requests finish, post the pending labels now."""
        self._stopping.set()
        if self._pacer is not None:
            self._pacer.cancel()
        try:
            if self._task is not None:
                await self._task
        finally:
            if self._owns_client and self._client is not None and not self._client.is_closed:
                await self._client.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---- the stream ---------------------------------------------------------------------------

    async def _run(self) -> None:
        feedback = asyncio.create_task(self._feedback_loop(), name="traffic-feedback")
        self._pacer = asyncio.create_task(self._pace(), name="traffic-pacer")
        try:
            # Returns when the pacer ends or is cancelled by stop(), without raising.
            await asyncio.wait([self._pacer])
            # Requests already sent finish (each is bounded by the client's timeout).
            while self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)
        finally:
            self._requests_done = True
            await feedback
        if not self._pacer.cancelled():
            self._pacer.result()  # a bug in the pacer surfaces here rather than vanishing

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        start, scheduled = loop.time(), 0
        while self.max_requests is None or self._stats.sent < self.max_requests:
            due = start + scheduled * interval
            now = loop.time()
            if now - due > MAX_LAG_SECONDS:
                start, scheduled, due = now, 0, now
            if due > now:
                await asyncio.sleep(due - now)
            await self._slots.acquire()
            scheduled += 1
            self._stats.sent += 1
            task = asyncio.create_task(self._invoke(self._rows.next_row()))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _invoke(self, row: TrafficRow) -> None:
        try:
            await self._send(row)
        # Anything else (a bad URL, a body that cannot be encoded) is counted too: one request's
        # trouble never ends the stream.
        except Exception as exc:
            self._stats.errors[type(exc).__name__] += 1
        finally:
            self._slots.release()

    async def _send(self, row: TrafficRow) -> None:
        assert self._client is not None
        body = {"features": row.features, "request_id": row.request_id}
        try:
            response = await self._client.post(f"{self.url}/invocations", json=body)
        except httpx.TimeoutException:
            self._stats.errors[TIMEOUT_ERROR] += 1
            return
        # Refused while the endpoint restarts, reset, protocol errors: all count, none stop us.
        except httpx.HTTPError:
            self._stats.errors[CONNECTION_ERROR] += 1
            return
        if not response.is_success:
            self._stats.errors[str(response.status_code)] += 1
            return
        try:
            answer = response.json()
            variant = str(answer["variant"])
        except (ValueError, KeyError, TypeError):
            self._stats.errors[BAD_RESPONSE] += 1
            return
        self._stats.ok += 1
        self._stats.variants[variant] += 1
        if row.labelled:
            due = asyncio.get_running_loop().time() + self.label_delay
            self._pending.append(_PendingLabel(due, row.request_id, row.label, due))

    # ---- feedback -----------------------------------------------------------------------------

    async def _feedback_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            stopping = self._stopping.is_set()
            final = self._requests_done and (stopping or not self._pending)
            # Stopping posts everything now; otherwise only labels whose delay passed.
            horizon = float("inf") if stopping and self._requests_done else loop.time()
            due: list[_PendingLabel] = []
            retained: deque[_PendingLabel] = deque()
            for label in self._pending:
                (due if label.due <= horizon else retained).append(label)
            self._pending = retained
            for begin in range(0, len(due), self.feedback_batch):
                await self._post_labels(due[begin : begin + self.feedback_batch], final=final)
            if final and not self._pending:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.feedback_interval)
            if self._stopping.is_set() and not self._requests_done:
                # Stopped: wait for the in-flight requests rather than spin.
                await asyncio.sleep(min(self.feedback_interval, 0.05))

    async def _post_labels(self, batch: list[_PendingLabel], *, final: bool) -> None:
        assert self._client is not None
        body = {"labels": [{"request_id": p.request_id, "label": p.label} for p in batch]}
        failure: str | None = None
        try:
            response = await self._client.post(f"{self.url}/feedback", json=body)
        except httpx.TimeoutException:
            failure = TIMEOUT_ERROR
        except httpx.HTTPError:
            failure = CONNECTION_ERROR
        except Exception as exc:  # never let the feedback task die: count it and retry
            failure = type(exc).__name__
        else:
            if response.is_success:
                self._stats.labelled += len(batch)
                return
            failure = str(response.status_code)
            if response.is_client_error:
                # The endpoint refused them (unknown ids, bad body): retrying would not help.
                self._stats.label_errors[failure] += 1
                self._stats.labels_dropped += len(batch)
                return
        self._stats.label_errors[failure] += 1
        now = asyncio.get_running_loop().time()
        retry = [p for p in batch if not final and now - p.first_due < self.label_retry_seconds]
        self._stats.labels_dropped += len(batch) - len(retry)
        # Retried first on the next tick.
        self._pending.extendleft(
            _PendingLabel(now, p.request_id, p.label, p.first_due) for p in reversed(retry)
        )
