"""`retrain approve|reject|loops|audit MODEL`: the loops that retrain a model, and their review."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from temporalio.client import Client

from starters.api.connection import retrain_home
from starters.api.loops import Loops, read_audit
from starters.cli.common import (
    Connection,
    JsonOption,
    ModelArgument,
    connection,
    console,
    fail,
    print_json,
    run,
)
from starters.cli.render import loops as render
from workflows.loop.models import ReviewDecision

LoopOption = Annotated[
    int | None,
    typer.Option("--loop", min=1, help="Loop number (default: the loop awaiting approval)"),
]
ReviewerOption = Annotated[
    str, typer.Option(help="Who decides (checked against the model's reviewer allow-list)")
]
CommentOption = Annotated[str, typer.Option(help="Why (kept in the audit record)")]


def _review(
    verb: Literal["approve", "reject"],
    model: str,
    loop: int | None,
    reviewer: str,
    comment: str,
    settings: Connection,
) -> None:
    decision = ReviewDecision(reviewer=reviewer, comment=comment)

    async def send(client: Client) -> None:
        record = await Loops(client, retrain_home()).review(model, verb, decision, loop)
        console.print(
            f"[green]{record.decision}d[/] by {record.reviewer} at {record.at:%Y-%m-%d %H:%M:%S}"
        )

    run(send, settings)


def approve(
    ctx: typer.Context,
    model: ModelArgument,
    reviewer: ReviewerOption,
    loop: LoopOption = None,
    comment: CommentOption = "",
) -> None:
    """Approve the candidate of a loop awaiting approval."""
    _review("approve", model, loop, reviewer, comment, connection(ctx))


def reject(
    ctx: typer.Context,
    model: ModelArgument,
    reviewer: ReviewerOption,
    loop: LoopOption = None,
    comment: CommentOption = "",
) -> None:
    """Reject the candidate of a loop awaiting approval."""
    _review("reject", model, loop, reviewer, comment, connection(ctx))


def loops(
    ctx: typer.Context,
    model: ModelArgument,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: JsonOption = False,
) -> None:
    """The model's loops, newest first, with their stage and outcome."""

    async def show(client: Client) -> None:
        rows = await Loops(client, retrain_home()).list(model, limit)
        if as_json:
            print_json([row.__dict__ for row in rows])
        else:
            console.print(render.loops_table(model, rows))

    run(show, connection(ctx))


def audit(
    model: ModelArgument,
    number: Annotated[
        int | None, typer.Argument(min=1, help="Loop number (default: latest)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print a loop's audit record (local: `.retrain/audit/`)."""
    try:
        record = read_audit(retrain_home(), model, number)
    except LookupError as err:
        raise fail(str(err)) from None
    if as_json:
        print_json(record.model_dump(mode="json"))
    else:
        render.print_audit(console, record)
