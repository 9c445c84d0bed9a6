"""The event gateway: a Starlette app that takes cloud and monitoring events over HTTP, stores
them durably and has them delivered to the models' coordinators.

HTTP contract (every error body is `{"error": "..."}`):

- `POST /v1/events/{eventbridge|s3|sns|pubsub|alertmanager|eventgrid|azuremonitor}`
  (optional `?model=NAME`: deliver every event of the request to that model) -> 202
  `{"accepted", "dead_lettered", "events": [{"event_id", "model", "outcome", "reason"?}]}` once
  the events are committed to the database; SNS subscription handshakes -> 200 with the URL to
  confirm (logged, never fetched); an Event Grid subscription validation event -> 200
  `{"validationResponse": code}`, and its CloudEvents handshake (`OPTIONS
  /v1/events/eventgrid` with WebHook-Request-Origin) -> 200 with WebHook-Allowed-Origin, both
  authenticated like the events. 400 malformed JSON, an unknown event shape or an invalid
  `?model=`; 401 no valid credential (see `auth`); 413 body over the limit (checked first: the
  HMAC needs the whole body); 503 the events could not be stored (nothing was acknowledged: retry).
- `POST /v1/slack/actions`: the Slack app's interactivity Request URL; an Approve / Reject
  click, signed with the app's signing secret, becomes the loop's `approve` / `reject` update
  (`slack`); 401 unsigned, stale or unconfigured, 400 not one of our buttons, else 200 with
  the outcome (also posted back to the Slack message).
- `GET /healthz` -> 200 `{"status": "ok"|"degraded", "database": {...}, "temporal": {...},
  "pending", "dead_letters"}`; Temporal being unreachable is `degraded`, not an error (events
  are still stored and delivered later); 503 when the database is not writable.
- `GET /metrics` -> Prometheus text (`metrics.GATEWAY_METRIC_NAMES`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client

from serving.http_json import error_response, http_error, internal_error, read_capped_body
from serving.schemas import BadRequest, parse_json
from starters.events.azure import EventGridValidation
from starters.gateway import dead_letters, pending
from starters.gateway.auth import (
    REALM,
    SOURCES,
    ReplayGuard,
    SourceSecrets,
    Unauthorized,
    authenticate,
    credentials,
)
from starters.gateway.database import (
    DatabaseThread,
    check_writable,
    database_path,
    open_database,
)
from starters.gateway.delivery import Deliverer, DeliveryPolicy
from starters.gateway.intake import (
    DEFAULT_MAX_BODY_BYTES,
    Intake,
    IntakeClosed,
    IntakeFailed,
    IntakeFull,
)
from starters.gateway.metrics import CONTENT_TYPE, GatewayMetrics, Outcome
from starters.gateway.routing import RouteKeys, SpecRouter
from starters.gateway.slack import SlackActions, SlackRefused
from starters.gateway.sources import MAPPERS, Incoming, SnsControl
from starters.gateway.temporal import TemporalLink
from workflows.common.names import TASK_QUEUE, validate_model_name

logger = logging.getLogger(__name__)

# What a refused sender is told to wait when the store is full.
RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True)
class GatewayConfig:
    home: Path
    secrets: Mapping[str, SourceSecrets]
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    task_queue: str = TASK_QUEUE
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    health_timeout_seconds: float = 2.0
    # Undelivered events the store may hold; beyond, requests are answered 503 + Retry-After.
    max_pending: int = 200_000
    # The Slack app's signing secret (Slack approvals); None refuses every click.
    slack_signing_secret: str | None = None

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        if self.max_pending < 1:
            raise ValueError("max_pending must be positive")


class Refused(Exception):
    """A request answered with a 4xx and the message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def create_app(
    config: GatewayConfig,
    connect: Callable[[], Awaitable[Client]],
    slack_http: httpx.AsyncClient | None = None,
) -> Starlette:
    """The gateway app. Opens the database now (a gateway that cannot store events must not
    start); `connect` is called on first delivery and again after a failed connection.
    `slack_http` posts Slack approvals' outcomes (tests pass one of their own)."""
    gateway = Gateway(config, TemporalLink(connect, config.task_queue), slack_http)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with gateway.running():
            yield

    routes = [
        Route(f"/v1/events/{source}", gateway.endpoint(source), methods=["POST"])
        for source in SOURCES
    ]
    routes += [
        Route("/v1/events/eventgrid", gateway.eventgrid_handshake, methods=["OPTIONS"]),
        Route("/v1/slack/actions", gateway.slack_actions, methods=["POST"]),
        Route("/healthz", gateway.healthz, methods=["GET"]),
        Route("/metrics", gateway.metrics_text, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )
    app.state.gateway = gateway
    return app


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        link: TemporalLink,
        slack_http: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.link = link
        self.slack = SlackActions(config.home, config.slack_signing_secret, link, slack_http)
        self.path = database_path(config.home)
        self.db = DatabaseThread(open_database(self.path))
        self.metrics = GatewayMetrics()
        self.router = SpecRouter(config.home)
        self.deliverer = Deliverer(self.db, link, config.delivery, self.metrics)
        self.intake = Intake(self.db, self._committed, max_pending=config.max_pending)
        self.replays = ReplayGuard()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The writer and the deliverer run while the app serves. At shutdown the writer
        commits what is queued; undelivered events stay pending for the next start."""
        tasks = _Tasks()
        writer = tasks.start(self.intake.run())
        tasks.start(self.deliverer.run())
        try:
            yield
        finally:
            self.intake.close()
            await writer
            await tasks.cancel()
            await self.slack.close()
            self.db.close()

    def _committed(self, events: Sequence[pending.NewEvent]) -> None:
        for (source, routed), count in Counter(
            (e.source, e.reason is None and e.model is not None) for e in events
        ).items():
            self.metrics.events(
                source, Outcome.ACCEPTED if routed else Outcome.DEAD_LETTERED, count
            )
        self.deliverer.wake()

    # ---- events ----------------------------------------------------------------------------

    def endpoint(self, source: str) -> Callable[[Request], Awaitable[Response]]:
        async def receive(request: Request) -> Response:
            try:
                response = await self._receive(source, request)
            except Refused as refused:
                logger.info("%s: refused with %d: %s", source, refused.status, refused.message)
                response = JSONResponse(
                    {"error": refused.message}, refused.status, headers=refused.headers
                )
            except Exception as err:  # counted like every answer, then the generic 500
                logger.error("unhandled error on %s", request.url.path, exc_info=err)
                response = error_response(500, f"internal error: {type(err).__name__}")
            self.metrics.request(source, response.status_code)
            return response

        return receive

    async def _receive(self, source: str, request: Request) -> Response:
        try:
            body = await read_capped_body(request, self.config.max_body_bytes)
        except BadRequest as err:
            raise Refused(err.status, err.message) from None
        found = credentials(source, request.headers, request.query_params)
        try:
            authenticate(
                source,
                self.config.secrets.get(source, SourceSecrets()),
                found,
                body,
                replays=self.replays,
            )
        except Unauthorized as err:
            challenge = f'Bearer realm="{REALM}", Basic realm="{REALM}"'
            raise Refused(401, str(err), {"WWW-Authenticate": challenge}) from None
        explicit = request.query_params.get("model")
        if explicit is not None:
            try:
                validate_model_name(explicit)
            except ValueError as err:
                raise Refused(400, f"?model=: {err}") from None
        try:
            payload = parse_json(body)
        except BadRequest as err:
            raise Refused(400, f"malformed JSON: {err.message}") from None
        try:
            mapped = MAPPERS[source](payload)
            if isinstance(mapped, SnsControl):
                return self._sns_handshake(mapped)
            if isinstance(mapped, EventGridValidation):
                # Answering with the code proves we asked for these events; nothing is fetched.
                logger.info("%s: subscription validation answered", source)
                return JSONResponse({"validationResponse": mapped.code}, 200)
            events = [self._new_event(source, item, explicit) for item in mapped]
        except ValueError as err:
            raise Refused(400, f"{source}: {err}") from None
        # The mappers read untrusted JSON: whatever they trip over (a list where a string was
        # expected, a timestamp past year 9999) is the sender's malformed event, not our 500.
        except (TypeError, KeyError, AttributeError, OverflowError, ArithmeticError) as err:
            logger.info("%s: unreadable event", source, exc_info=err)
            message = f"{source}: cannot read this event ({type(err).__name__}: {err})"
            raise Refused(400, message[:2000]) from None
        try:
            await self.intake.submit(events)
        except IntakeFull as err:
            return error_response(503, str(err), {"Retry-After": str(RETRY_AFTER_SECONDS)})
        except (IntakeClosed, IntakeFailed) as err:
            return error_response(503, str(err))
        answers = [_answer(event) for event in events]
        dead = sum(1 for a in answers if a["outcome"] == Outcome.DEAD_LETTERED)
        body_out = {"accepted": len(events) - dead, "dead_lettered": dead, "events": answers}
        return JSONResponse(body_out, 202)

    def _new_event(self, source: str, item: Incoming, explicit: str | None) -> pending.NewEvent:
        keys = RouteKeys.of(item.mapped, explicit or item.model)
        route = self.router.route(keys)
        event = item.mapped.event
        return pending.NewEvent(
            source=source,
            model=route.model,
            event_id=event.event_id,
            event=event.model_dump_json(exclude_none=True),
            route=json.dumps(keys.as_dict()),
            reason=route.reason,
        )

    async def eventgrid_handshake(self, request: Request) -> Response:
        """Event Grid's CloudEvents 1.0 webhook validation (the abuse-protection handshake):
        an OPTIONS request naming its origin; allowed by echoing it back."""
        source = "eventgrid"
        found = credentials(source, request.headers, request.query_params)
        try:
            secrets = self.config.secrets.get(source, SourceSecrets())
            authenticate(source, secrets, found, b"", replays=self.replays)
        except Unauthorized as err:
            response: Response = JSONResponse({"error": str(err)}, 401)
        else:
            origin = request.headers.get("webhook-request-origin")
            if not origin:
                response = JSONResponse({"error": "eventgrid: no WebHook-Request-Origin"}, 400)
            else:
                allowed = {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"}
                response = Response(status_code=200, headers=allowed)
        self.metrics.request(source, response.status_code)
        return response

    def _sns_handshake(self, control: SnsControl) -> Response:
        # Confirming would mean fetching the URL: the gateway makes no outbound calls, so the
        # operator confirms (open the URL, or `aws sns confirm-subscription`).
        logger.warning(
            "SNS %s for topic %s: confirm by visiting %s",
            control.kind,
            control.topic_arn,
            control.url,
        )
        message = f"{control.kind} logged; an operator must visit the URL to confirm"
        return JSONResponse(
            {"status": message, "topic_arn": control.topic_arn, "url": control.url}, 200
        )

    # ---- Slack approvals ---------------------------------------------------------------------

    async def slack_actions(self, request: Request) -> Response:
        try:
            body = await read_capped_body(request, self.config.max_body_bytes)
            response = JSONResponse(await self.slack.handle(request.headers, body))
        except BadRequest as err:
            response = error_response(err.status, err.message)
        except SlackRefused as refused:
            logger.info("slack: refused with %d: %s", refused.status, refused.message)
            response = error_response(refused.status, refused.message)
        self.metrics.request("slack", response.status_code)
        return response

    # ---- health and metrics --------------------------------------------------------------

    async def _counts(self) -> tuple[int, int]:
        return await self.db.run(lambda c: (pending.count(c), dead_letters.count(c)))

    async def healthz(self, request: Request) -> Response:
        database: dict[str, Any] = {"path": str(self.path), "writable": True}
        status = 200
        try:
            await self.db.run(check_writable)
            waiting, dead = await self._counts()
        except sqlite3.Error as err:
            database |= {"writable": False, "error": str(err)}
            status, waiting, dead = 503, -1, -1
        problem = await self.link.health(self.config.health_timeout_seconds)
        temporal: dict[str, Any] = {"reachable": problem is None}
        if problem is not None:
            temporal["error"] = problem
        overall = "failing" if status != 200 else "ok" if problem is None else "degraded"
        body = {
            "status": overall,
            "database": database,
            "temporal": temporal,
            "pending": waiting,
            "dead_letters": dead,
        }
        return JSONResponse(body, status)

    async def metrics_text(self, request: Request) -> Response:
        with contextlib.suppress(sqlite3.Error):  # the gauges keep their last values
            self.metrics.stored(*await self._counts())
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)


def _answer(event: pending.NewEvent) -> dict[str, Any]:
    routed = event.reason is None and event.model is not None
    answer: dict[str, Any] = {
        "event_id": event.event_id,
        "model": event.model,
        "outcome": Outcome.ACCEPTED if routed else Outcome.DEAD_LETTERED,
    }
    if not routed:
        answer["reason"] = event.reason
    return answer


class _Tasks:
    """Background tasks of the app, cancelled together at shutdown."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, coroutine: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self._tasks.append(task)
        return task

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
