"""`retrain gateway` (the HTTP event gateway) and `retrain dlq list|replay|drop` (its
dead-letter store)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Annotated

import typer
from rich.markup import escape

from starters.api.connection import retrain_home
from starters.api.observability import TracingUnavailable, setup_tracing
from starters.cli.common import (
    JsonOption,
    LogFormatOption,
    connection,
    console,
    errors,
    fail,
    print_json,
    setup_logging,
)
from starters.gateway import dead_letters
from starters.gateway.auth import SOURCES, SecretsError, load_secrets
from starters.gateway.database import (
    DatabaseError,
    database_path,
    open_database,
    transaction,
)
from starters.gateway.intake import DEFAULT_MAX_BODY_BYTES
from workflows.common.names import TASK_QUEUE

dlq_app = typer.Typer(
    help="The event gateway's dead-letter store: list, replay or drop undelivered events.",
    no_args_is_help=True,
)

TaskQueueOption = Annotated[
    str, typer.Option("--task-queue", help="Task queue of the coordinators' workers")
]
IdsArgument = Annotated[
    list[int] | None, typer.Argument(help="Dead-letter ids (see `retrain dlq list`)")
]
AllOption = Annotated[bool, typer.Option("--all", help="Every dead letter")]


def _source(value: str | None) -> str | None:
    if value is not None and value not in SOURCES:
        raise typer.BadParameter(f"unknown source {value!r}; sources: {', '.join(SOURCES)}")
    return value


def gateway(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="HTTP port", min=1, max=65535)] = 8080,
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest request body accepted (413 beyond)", min=1)
    ] = DEFAULT_MAX_BODY_BYTES,
    task_queue: TaskQueueOption = TASK_QUEUE,
    log_format: LogFormatOption = None,
) -> None:
    """Run the event gateway: S3/EventBridge, SNS, Pub/Sub and Alertmanager events in, trigger
    events to the coordinators out (stored first; undeliverable ones kept in `retrain dlq`)."""
    # Imported here: every other `retrain` command starts without the gateway's web stack
    # (Starlette, uvicorn, Slack's SDK, pyarrow) and its delivery machinery.
    import uvicorn

    from starters.gateway.app import GatewayConfig, create_app
    from starters.gateway.slack import load_signing_secret

    setup_logging(log_format)
    try:
        setup_tracing("retrain-gateway")  # its Temporal calls are traced as the gateway's
    except TracingUnavailable as err:
        raise fail(str(err), code=2) from None
    try:
        secrets = load_secrets(os.environ)
        slack_secret = load_signing_secret(os.environ)
    except SecretsError as err:
        raise fail(str(err), code=2) from None
    config = GatewayConfig(
        home=retrain_home(),
        secrets=secrets,
        max_body_bytes=max_body_bytes,
        task_queue=task_queue,
        slack_signing_secret=slack_secret,
    )
    try:
        app = create_app(config, connection(ctx).connect)
    except DatabaseError as err:
        raise fail(str(err)) from None
    closed = [source for source in SOURCES if not secrets[source].configured]
    if closed:
        errors.print(
            f"[yellow]warning:[/] no credentials for {', '.join(closed)}: those endpoints refuse "
            "every request (set RETRAIN_GATEWAY_TOKEN_<SOURCE> or RETRAIN_GATEWAY_HMAC_<SOURCE>)"
        )
    path = database_path(config.home)
    console.print(f"event gateway on [bold]http://{host}:{port}[/], events stored in {path}")
    # No access log: a Pub/Sub push URL carries its token in the query string.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")


@contextmanager
def _database(create: bool = False) -> Iterator[sqlite3.Connection | None]:
    path = database_path(retrain_home())
    if not create and not path.exists():
        yield None
        return
    try:
        conn = open_database(path)
    except DatabaseError as err:
        raise fail(str(err)) from None
    with closing(conn):
        yield conn


def _show(letters: list[dead_letters.DeadLetter]) -> None:
    """One block per entry: reasons are long and read best unwrapped by table columns."""
    console.print(f"{len(letters)} dead letter(s)")
    for letter in letters:
        target = escape(letter.model) if letter.model else "[yellow](no model)[/]"
        console.print(
            f"[bold]{letter.id}[/]  {letter.source} -> {target}  {letter.kind}  "
            f"event {escape(letter.event_id or '-')}"
        )
        console.print(
            f"    {letter.attempts} attempt(s); failed first {_when(letter.first_failed_at)}, "
            f"last {_when(letter.last_failed_at)}"
        )
        console.print(f"    reason: {escape(letter.reason)}", soft_wrap=True)


def _when(stamp: str) -> str:
    return stamp[:19].replace("T", " ") + " UTC"


@dlq_app.command("list")
def dlq_list(
    source: Annotated[
        str | None, typer.Option(help=f"Only this source ({', '.join(SOURCES)})", callback=_source)
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only this model")] = None,
    as_json: JsonOption = False,
) -> None:
    """List dead letters: source, model, event, reason, failure times and attempts."""
    with _database() as conn:
        letters = [] if conn is None else dead_letters.select(conn, source=source, model=model)
    if as_json:
        print_json([letter.as_json() for letter in letters])
    elif not letters:
        console.print("no dead letters")
    else:
        _show(letters)


def _chosen(ids: list[int] | None, all_: bool) -> list[int] | None:
    if ids and all_:
        raise fail("give dead-letter ids or --all, not both", code=2)
    if not ids and not all_:
        raise fail("give dead-letter ids or --all", code=2)
    return None if all_ else ids


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context,
    ids: IdsArgument = None,
    all_: AllOption = False,
    attempts: Annotated[
        int, typer.Option(help="Attempts per signal before giving up", min=1, max=10)
    ] = 3,
    task_queue: TaskQueueOption = TASK_QUEUE,
    as_json: JsonOption = False,
) -> None:
    """Deliver dead letters again through Temporal: removed when delivered, kept with the new
    reason when not. Safe to repeat (coordinators ignore event ids they have seen)."""
    from starters.gateway.delivery import DeliveryPolicy
    from starters.gateway.replay import replay
    from starters.gateway.routing import SpecRouter
    from starters.gateway.temporal import TemporalLink

    chosen = _chosen(ids, all_)
    home = retrain_home()
    policy = DeliveryPolicy(attempts=attempts)
    link = TemporalLink(connection(ctx).connect, task_queue)
    with _database() as conn:
        if conn is None:
            report = None
        else:
            report = asyncio.run(replay(conn, link, SpecRouter(home), chosen, policy))
    delivered = [] if report is None else report.delivered
    failed = {} if report is None else report.failed
    missing = (chosen or []) if report is None else report.missing
    if as_json:
        print_json(
            {
                "delivered": delivered,
                "failed": [{"id": i, "reason": r} for i, r in failed.items()],
                "missing": missing,
            }
        )
    else:
        console.print(
            f"replayed {len(delivered) + len(failed)}: {len(delivered)} delivered, "
            f"{len(failed)} failed (kept with their reasons)"
        )
        for key, reason in failed.items():
            console.print(f"  {key}: {escape(reason)}")
        if missing:
            errors.print(f"not in the store: {', '.join(map(str, missing))}")
    if failed or missing:
        raise typer.Exit(1)


@dlq_app.command("drop")
def dlq_drop(
    ids: IdsArgument = None,
    all_: AllOption = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm dropping with --all")] = False,
) -> None:
    """Delete dead letters for good (--all needs --yes)."""
    chosen = _chosen(ids, all_)
    if chosen is None and not yes:
        raise fail("--all deletes every dead letter for good: add --yes", code=2)
    found: list[dead_letters.DeadLetter] = []
    dropped = 0
    with _database() as conn:
        if conn is not None:
            with transaction(conn):
                found = dead_letters.select(conn, chosen)
                dropped = dead_letters.remove(conn, [letter.id for letter in found])
    missing = [] if chosen is None else sorted(set(chosen) - {letter.id for letter in found})
    console.print(f"dropped {dropped} dead letter(s)")
    if missing:
        errors.print(f"not in the store: {', '.join(map(str, missing))}")
        raise typer.Exit(1)
