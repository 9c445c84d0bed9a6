"""`retrain slots show|set-limit`: the global limit of concurrent trainings."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table
from temporalio.client import Client

from starters.api.slots import TrainingSlotsClient
from starters.cli.common import JsonOption, connection, console, print_json, run
from workflows.slots.models import MAX_LIMIT, SlotsStatus

slots_app = typer.Typer(
    help="The global limit of concurrent trainings: who holds a slot, who waits.",
    no_args_is_help=True,
)


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def print_status(status: SlotsStatus) -> None:
    console.print(
        f"[bold]{status.in_use}[/] of [bold]{status.limit}[/] training slots in use, "
        f"[bold]{len(status.waiting)}[/] waiting "
        f"(granted {status.granted_total}, released {status.released_total}, "
        f"reclaimed {status.reclaimed_total})",
        highlight=False,
    )
    holders = Table(title="holding a slot")
    for column in ("loop", "model", "priority", "asked", "granted"):
        holders.add_column(column, overflow="fold")
    for h in status.holders:
        holders.add_row(
            h.loop_id, h.model, str(h.priority), _time(h.requested_at), _time(h.granted_at)
        )
    console.print(holders)
    waiting = Table(title="waiting, in grant order")
    for column in ("next", "loop", "model", "priority", "asked"):
        waiting.add_column(column, overflow="fold")
    for i, w in enumerate(status.waiting, 1):
        waiting.add_row(str(i), w.loop_id, w.model, str(w.priority), _time(w.requested_at))
    console.print(waiting)


@slots_app.command("show")
def show(
    ctx: typer.Context,
    as_json: JsonOption = False,
) -> None:
    """The limit, the loops holding a slot and the waiting queue in grant order."""

    async def read(client: Client) -> SlotsStatus:
        return await TrainingSlotsClient(client).status()

    status = run(read, connection(ctx))
    if as_json:
        print_json(status.model_dump(mode="json"))
    else:
        print_status(status)


@slots_app.command("set-limit")
def set_limit(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Argument(min=1, max=MAX_LIMIT, help="Concurrent trainings allowed (K)")
    ],
    by: Annotated[str, typer.Option(help="Who changes it (kept in the limiter's events)")] = "",
    reason: Annotated[str, typer.Option(help="Why")] = "",
) -> None:
    """Change K on the running limiter (raising it lets waiting loops in at once).

    Holders above a lowered limit keep their slots until they release them."""

    async def change(client: Client) -> SlotsStatus:
        return await TrainingSlotsClient(client).set_limit(limit, by=by, reason=reason)

    status = run(change, connection(ctx))
    console.print(
        f"limit set to [bold]{status.limit}[/]: {status.in_use} in use, "
        f"{len(status.waiting)} waiting",
        highlight=False,
    )
