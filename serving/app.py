"""The local prediction endpoint (`retrain serve MODEL`): a Starlette app over one model's
registered versions.

HTTP contract (every error body is `{"error": "..."}`):

- `POST /invocations` `{"features": {...}, "request_id"?: str}` -> 200
  `{"request_id", "variant", "version", "prediction", "score"}` with headers `X-Request-Id`
  and `X-Variant`; 400 malformed body, 413 body too large, 422 features that do not fit the
  model, 500 the model failed (captured as an error), 503 no model deployed yet.
- `POST /feedback` `{"request_id", "label"}` or `{"labels": [...]}` -> 200 `{"accepted": n}`
  (plus `unknown`, `unknown_count` and a `warning` when some request ids are unknown: the
  others' labels are recorded all the same); 400 malformed, 404 every request id unknown
  (listed, nothing recorded), 413 too large / too many labels, 422 invalid. An answered
  request or label is in the write-ahead log before the answer (serving/capture.py).
- `/admin/*` needs `Authorization: Bearer <admin token>` (401 otherwise; the token: see
  activities/local/endpoint.py). `GET /admin/weights` -> 200 EndpointState; `PUT
  /admin/weights` `{"weights", "shadow"?, "change_id"}` -> 200 EndpointState (also for a change
  id already applied: nothing changes); 400 malformed, 422 refused (split, unknown variants,
  model), 500 a variant could not be loaded or the state not persisted (the split in force is
  unchanged).
- `POST /admin/flush` -> 200 `{"requests": n, "feedback": m}` (rows written), 500 on failure.
- `GET /healthz` -> 200 `{"status": "ok", "model", "generation", "deployed"}`.
- `GET /metrics` -> Prometheus text.

Model calls run in worker threads, never on the event loop, `model_threads` at a time: one-row
predictions hold the GIL, so more at once only stretch each call (and its measured latency)
without answering sooner; requests wait for a slot before their latency clock starts.

A shadow variant answers the same features in a task of its own once the caller's answer is
ready; its answer is captured (flagged shadow, same request id) and never returned, and nothing
it does reaches the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from activities.local.capture import (
    CAPTURED_AT,
    ERROR,
    FEEDBACK,
    FEEDBACK_SCHEMA,
    GENERATION,
    LABEL,
    LATENCY_MS,
    PREDICTION,
    RECEIVED_AT,
    REQUEST_ID,
    REQUESTS,
    SCORE,
    SHADOW,
    STATUS_CODE,
    VARIANT,
    VERSION,
    capture_dir,
    request_schema,
)
from activities.local.endpoint import admin_token
from activities.local.registry import MlflowRegistry
from activities.loop.data_window import resolve_uri
from activities.ports import ModelRegistry
from activities.specs import SpecError, SpecStore
from serving.capture import CaptureBuffer, CaptureError, RequestIndex
from serving.config import EndpointConfig
from serving.http_json import error_response, http_error, internal_error, read_capped_body
from serving.metrics import CONTENT_TYPE, EndpointMetrics
from serving.routing import Router, Routing, StateError
from serving.schemas import (
    BadRequest,
    FeatureSchema,
    FeatureValue,
    parse_feedback,
    parse_invocation,
    parse_json,
    parse_weights,
)
from serving.variants import (
    Prediction,
    UnknownVariantError,
    Variant,
    VariantLoader,
    VariantLoadError,
    one_row_frame,
)

logger = logging.getLogger(__name__)

NOT_DEPLOYED = "no model deployed yet (run a retraining loop first)"
# Mirrored calls waiting for the thread pool beyond this are skipped: shadow traffic must not
# pile up behind a slow shadow model.
MAX_SHADOWS_IN_FLIGHT = 256
# How long a flush waits for mirrored answers still being computed.
SHADOW_SETTLE_SECONDS = 10.0
_MAX_ERROR_CHARS = 1000
_MAX_LISTED_IDS = 20


class EndpointError(Exception):
    """The endpoint cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class Answer:
    variant: Variant
    prediction: Prediction | None
    error: str | None
    seconds: float


def create_app(config: EndpointConfig, registry: ModelRegistry | None = None) -> Starlette:
    """The endpoint for `config.model`; raises EndpointError when it cannot serve.

    Blocking: reads the spec and the persisted weights and loads the variants they name.
    `registry` defaults to the MLflow registry in `config.home`.
    """
    endpoint = Endpoint(config, registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        flusher = asyncio.create_task(endpoint.flush_periodically())
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await endpoint.flush_all()
            endpoint.requests.close()
            endpoint.labels.close()

    routes = [
        Route("/invocations", endpoint.invocations, methods=["POST"]),
        Route("/feedback", endpoint.feedback, methods=["POST"]),
        Route("/admin/weights", endpoint.admin(endpoint.get_weights), methods=["GET"]),
        Route("/admin/weights", endpoint.admin(endpoint.put_weights), methods=["PUT"]),
        Route("/admin/flush", endpoint.admin(endpoint.flush), methods=["POST"]),
        Route("/healthz", endpoint.healthz, methods=["GET"]),
        Route("/metrics", endpoint.metrics_text, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )
    app.state.endpoint = endpoint
    return app


class Endpoint:
    def __init__(self, config: EndpointConfig, registry: ModelRegistry | None = None) -> None:
        self.config = config
        home, model = config.home, config.model
        try:
            spec = SpecStore(home).get(model)
        except SpecError as err:
            raise EndpointError(str(err)) from None
        if spec is None:
            raise EndpointError(
                f"model {model!r} is not registered in {home}: run `retrain models register FILE`"
            )
        self.spec = spec
        holdout = resolve_uri(home, spec.data.baseline_holdout)
        try:
            reference = pq.read_schema(holdout)
        except (OSError, pa.ArrowException) as err:
            raise EndpointError(
                f"cannot read the baseline holdout {holdout}, whose schema types the features: "
                f"{err}"
            ) from None
        try:
            self.features = FeatureSchema(spec, reference)
            schema = request_schema(spec, reference)
        except ValueError as err:
            raise EndpointError(f"{model}: {err}") from None

        self.capture_root = capture_dir(home, spec)
        buffered = max(10 * config.capture_batch_rows, 10_000)
        self.requests = CaptureBuffer(
            self.capture_root, REQUESTS, schema, CAPTURED_AT, config.capture_batch_rows, buffered
        )
        self.labels = CaptureBuffer(
            self.capture_root,
            FEEDBACK,
            FEEDBACK_SCHEMA,
            RECEIVED_AT,
            config.capture_batch_rows,
            buffered,
        )
        self.index = RequestIndex(
            self.capture_root,
            config.feedback_index_size,
            timedelta(days=config.feedback_lookback_days),
            lambda: self.requests.pending_values(REQUEST_ID),
        )
        # What a killed process acknowledged but had not written yet.
        now = datetime.now(UTC)
        self.requests.recover(written=lambda ids: self.index.find(ids, now))
        self.labels.recover()
        self.metrics = EndpointMetrics(model)
        loader = VariantLoader(registry or MlflowRegistry(home), model, spec.task)
        self.router = Router(model, config.state_file, loader, config.seed)
        try:
            self.router.start()
        except (StateError, VariantLoadError) as err:
            raise EndpointError(f"cannot restore the endpoint of {model}: {err}") from None
        self.metrics.routing(self.router.current.weights, self.router.current.generation)
        token = config.admin_token or admin_token(home, model, create=True)
        if not token:
            raise EndpointError(f"the admin token of {model} is empty")
        self._admin_token: str = token
        self._flush_wanted = asyncio.Event()
        self._shadows: set[asyncio.Task[None]] = set()
        self._model_slots: anyio.CapacityLimiter | None = None

    # ---- predictions ---------------------------------------------------------------------

    async def invocations(self, request: Request) -> Response:
        try:
            body = await read_capped_body(request, self.config.max_body_bytes)
            invocation = parse_invocation(parse_json(body))
            features = self.features.coerce(invocation.features)
        except BadRequest as err:
            return self._refused(err)
        routing = self.router.current
        if not routing.deployed:
            return error_response(503, NOT_DEPLOYED)
        request_id = invocation.request_id or uuid.uuid4().hex
        variant = routing.choose(self.router.rng)
        answer = await self._predict(variant, features)
        self._capture(answer, routing, request_id, features, shadow=False)
        self.index.add([request_id])
        if routing.shadow is not None:
            self._mirror(routing, routing.shadow, request_id, features)
        headers = {"X-Request-Id": request_id, "X-Variant": variant.name}
        identity = {"request_id": request_id, "variant": variant.name, "version": variant.version}
        if answer.prediction is None:
            message = f"variant {variant.name} failed to predict: {answer.error}"
            return JSONResponse({"error": message, **identity}, 500, headers=headers)
        body_out = {
            **identity,
            "prediction": answer.prediction.shown,
            "score": answer.prediction.score,
        }
        return JSONResponse(body_out, headers=headers)

    async def _predict(self, variant: Variant, features: dict[str, FeatureValue]) -> Answer:
        if self._model_slots is None:  # created on the serving loop, at first use
            self._model_slots = anyio.CapacityLimiter(self.config.model_threads)
        return await anyio.to_thread.run_sync(
            self._call, variant, features, limiter=self._model_slots
        )

    def _call(self, variant: Variant, features: dict[str, FeatureValue]) -> Answer:
        """One prediction (blocking, in the thread pool); latency is the model call only."""
        frame = one_row_frame(features, self.features.arrow_schema)
        started = time.perf_counter()
        try:
            prediction = variant.predict(frame)
        # Whatever the model raises becomes a captured, counted error answer.
        except Exception as exc:
            seconds = time.perf_counter() - started
            error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
            return Answer(variant, None, error, seconds)
        return Answer(variant, prediction, None, time.perf_counter() - started)

    def _capture(
        self,
        answer: Answer,
        routing: Routing,
        request_id: str,
        features: dict[str, FeatureValue],
        shadow: bool,
    ) -> None:
        prediction = answer.prediction
        row: dict[str, Any] = {
            REQUEST_ID: request_id,
            VARIANT: answer.variant.name,
            VERSION: answer.variant.version,
            SHADOW: shadow,
            GENERATION: routing.generation,
            CAPTURED_AT: datetime.now(UTC),
            LATENCY_MS: answer.seconds * 1000,
            STATUS_CODE: 200 if prediction is not None else 500,
            ERROR: answer.error,
            PREDICTION: prediction.value if prediction is not None else None,
            SCORE: prediction.score if prediction is not None else None,
            **features,
        }
        if self.requests.append(row):
            self._flush_wanted.set()
        self.metrics.answer(answer.variant.name, shadow, answer.seconds, prediction is None)
        if answer.error is not None:
            # Every error is counted and captured; mirrored ones are only worth a debug line.
            logger.log(
                logging.DEBUG if shadow else logging.WARNING,
                "%s %s%s failed on request %s: %s",
                self.config.model,
                answer.variant.name,
                " (shadow)" if shadow else "",
                request_id,
                answer.error,
            )

    def _mirror(
        self,
        routing: Routing,
        variant: Variant,
        request_id: str,
        features: dict[str, FeatureValue],
    ) -> None:
        if len(self._shadows) >= MAX_SHADOWS_IN_FLIGHT:
            self.metrics.shadow_skipped()
            return

        async def mirror() -> None:
            try:
                answer = await self._predict(variant, features)
                self._capture(answer, routing, request_id, features, shadow=True)
            except Exception:  # never surfaces anywhere but the log
                logger.exception("shadow %s failed on request %s", variant.name, request_id)

        task = asyncio.create_task(mirror())
        # The set holds the task (asyncio keeps only weak references) until it is done.
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    # ---- feedback ------------------------------------------------------------------------

    async def feedback(self, request: Request) -> Response:
        try:
            body = await read_capped_body(request, self.config.max_feedback_body_bytes)
            labels = parse_feedback(parse_json(body))
            now = datetime.now(UTC)
            wanted = self.index.not_recent(label.request_id for label in labels)
            unknown: list[str] = []
            if wanted:
                found = await run_in_threadpool(self.index.find, wanted, now)
                self.index.add(found)
                unknown = sorted(wanted - found)
                if len(unknown) == len({label.request_id for label in labels}):
                    raise BadRequest(
                        404, "unknown_request_ids", self._unknown(unknown, "no label was recorded")
                    )
        except BadRequest as err:
            return self._refused(err)
        # Labels of known requests are recorded; the unknown ones are named in the answer
        # (one lost or mistyped id never costs the batch's other labels).
        missing = set(unknown)
        kept = [label for label in labels if label.request_id not in missing]
        flush = False
        for label in kept:
            row = {REQUEST_ID: label.request_id, LABEL: label.label, RECEIVED_AT: now}
            flush = self.labels.append(row) or flush
        if flush:
            self._flush_wanted.set()
        self.metrics.feedback(len(kept))
        answer: dict[str, Any] = {"accepted": len(kept)}
        if unknown:
            answer["unknown"] = unknown[:_MAX_LISTED_IDS]
            answer["unknown_count"] = len(unknown)
            answer["warning"] = self._unknown(unknown, "their labels were not recorded")
        return JSONResponse(answer)

    def _unknown(self, unknown: list[str], recorded: str) -> str:
        shown = ", ".join(unknown[:_MAX_LISTED_IDS])
        more = len(unknown) - _MAX_LISTED_IDS
        return (
            f"{len(unknown)} request ids were not answered by this endpoint in the last "
            f"{self.config.feedback_lookback_days} days: {shown}"
            + (f" and {more} more" if more > 0 else "")
            + f"; {recorded}"
        )

    # ---- admin ---------------------------------------------------------------------------

    def admin(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """`handler` behind the admin token (compared in constant time, never echoed)."""
        expected = hashlib.sha256(self._admin_token.encode()).digest()

        async def guarded(request: Request) -> Response:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            presented = hashlib.sha256(given.strip().encode()).digest()
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented, expected):
                self.metrics.bad_request("unauthorized")
                logger.warning(
                    "refused %s %s: no valid admin token", request.method, request.url.path
                )
                return error_response(
                    401,
                    "the admin API needs Authorization: Bearer <admin token>",
                    {"WWW-Authenticate": 'Bearer realm="retrain-endpoint-admin"'},
                )
            return await handler(request)

        return guarded

    async def get_weights(self, request: Request) -> Response:
        return JSONResponse(self.router.current.state().model_dump(mode="json"))

    async def put_weights(self, request: Request) -> Response:
        try:
            body = await read_capped_body(request, self.config.max_feedback_body_bytes)
            change = parse_weights(parse_json(body), self.config.model)
        except BadRequest as err:
            logger.warning("refused weights change: %s", err.message)
            return error_response(err.status, err.message)
        try:
            routing, changed = await self.router.apply(change)
        except UnknownVariantError as err:
            logger.warning("refused weights change %s: %s", change.change_id, err)
            return error_response(422, str(err))
        except (VariantLoadError, StateError) as err:
            logger.error("weights change %s not applied: %s", change.change_id, err)
            return error_response(500, f"change {change.change_id} not applied: {err}")
        if changed:
            self.metrics.routing(routing.weights, routing.generation)
            logger.info(
                "%s generation %d (%s): weights %s, shadow %s",
                self.config.model,
                routing.generation,
                change.change_id,
                routing.weights,
                routing.shadow.name if routing.shadow else None,
            )
        return JSONResponse(routing.state().model_dump(mode="json"))

    async def flush(self, request: Request) -> Response:
        try:
            requests, labels = await self._flush_both()
        except CaptureError as err:
            return error_response(500, str(err))
        return JSONResponse({"requests": requests, "feedback": labels})

    async def healthz(self, request: Request) -> Response:
        routing = self.router.current
        return JSONResponse(
            {
                "status": "ok",
                "model": self.config.model,
                "generation": routing.generation,
                "deployed": routing.deployed,
            }
        )

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    # ---- capture flushing ----------------------------------------------------------------

    async def flush_periodically(self) -> None:
        """Flush every `capture_flush_seconds`, and as soon as a batch fills (lifespan task)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._flush_wanted.wait(), timeout=self.config.capture_flush_seconds
                )
            self._flush_wanted.clear()
            try:
                await self.flush_all()
            except Exception:  # the flusher must outlive any one failure
                logger.exception("capture flush of %s failed", self.config.model)

    async def flush_all(self) -> None:
        """Flush both buffers, logging (not raising) failures: the rows stay buffered."""
        with contextlib.suppress(CaptureError):
            await self._flush_both()

    async def _flush_both(self) -> tuple[int, int]:
        # Answers mirrored before this flush belong in it.
        if self._shadows:
            await asyncio.wait(set(self._shadows), timeout=SHADOW_SETTLE_SECONDS)
        failures: list[str] = []
        counts: list[int] = []
        for buffer in (self.requests, self.labels):
            try:
                counts.append(await run_in_threadpool(buffer.flush))
            except CaptureError as err:
                logger.error("capture flush failed: %s", err)
                self.metrics.capture_error(buffer.kind)
                failures.append(str(err))
                counts.append(0)
        if failures:
            raise CaptureError("; ".join(failures))
        return counts[0], counts[1]

    # ---- helpers -------------------------------------------------------------------------

    def _refused(self, err: BadRequest) -> Response:
        self.metrics.bad_request(err.reason)
        return error_response(err.status, err.message)
