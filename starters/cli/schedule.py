"""`retrain schedule set|list|describe|pause|unpause|trigger|backfill|delete`: a Temporal Schedule
per model that sends its coordinator `scheduled` triggers (the coordinator still decides)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from temporalio.client import Client

from starters.api.schedules import Schedules, ScheduleView, check_backfill_range, parse_settings
from starters.cli.common import (
    JsonOption,
    ModelArgument,
    RegisteredModelArgument,
    connection,
    console,
    fail,
    print_json,
    run,
)
from starters.cli.render.schedules import schedule_details, schedules_table
from workflows.common.names import TASK_QUEUE
from workflows.schedule.models import OverlapPolicy

schedule_app = typer.Typer(
    help="Scheduled triggers: one Temporal Schedule per model sends `scheduled` triggers to its "
    "coordinator, and alerts on skipped or missed runs and stale data.",
    no_args_is_help=True,
)

NoteOption = Annotated[str, typer.Option(help="Why (shown in list and describe)")]
TIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


def _show(view: ScheduleView, as_json: bool) -> None:
    if as_json:
        print_json(view.model_dump(mode="json"))
    else:
        console.print(schedule_details(view))


@schedule_app.command("set")
def set_schedule(
    ctx: typer.Context,
    model: RegisteredModelArgument,
    cron: Annotated[
        list[str] | None,
        typer.Option("--cron", help="Cron expression, repeatable: '0 3 * * *', '@daily'"),
    ] = None,
    every: Annotated[
        str | None, typer.Option(help="An interval instead of cron: 90s, 15m, 6h, 1d")
    ] = None,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone of the cron")] = "UTC",
    overlap: Annotated[
        OverlapPolicy,
        typer.Option(help="When a run is due while the previous one still runs"),
    ] = OverlapPolicy.SKIP,
    catchup_window: Annotated[
        str, typer.Option(help="Runs due while Temporal was down start late up to this")
    ] = "1h",
    jitter: Annotated[str | None, typer.Option(help="Random delay up to this")] = None,
    stale_after: Annotated[
        str | None, typer.Option(help="Alert when the newest labelled partition is older")
    ] = None,
    priority: Annotated[int, typer.Option(help="Trigger priority, 1 (highest) to 5")] = 3,
    note: Annotated[str | None, typer.Option(help="Note (kept on update unless given)")] = None,
    task_queue: Annotated[
        str, typer.Option(help="Task queue of the worker that runs the schedule's runs")
    ] = TASK_QUEUE,
    as_json: JsonOption = False,
) -> None:
    """Create the model's schedule, or update it in place (its pause state is kept)."""
    try:
        settings = parse_settings(
            {
                "cron": cron or [],
                "every": every,
                "timezone": tz,
                "overlap": overlap,
                "catchup_window": catchup_window,
                "jitter": jitter,
                "stale_after": stale_after,
                "priority": priority,
            }
        )
    except ValueError as error:
        raise fail(str(error), code=2) from None

    async def act(client: Client) -> None:
        outcome = await Schedules(client, task_queue).apply(model, settings, note)
        if as_json:
            print_json(outcome.model_dump(mode="json"))
            return
        verb = "created" if outcome.created else "updated"
        console.print(f"[green]{verb}[/] {outcome.schedule.schedule_id}")
        console.print(schedule_details(outcome.schedule))

    run(act, connection(ctx))


@schedule_app.command("list")
def list_schedules(
    ctx: typer.Context,
    as_json: JsonOption = False,
) -> None:
    """Every model's schedule: when, overlap policy, next run, state, last run."""

    async def show(client: Client) -> None:
        views = await Schedules(client).list()
        if as_json:
            print_json([view.model_dump(mode="json") for view in views])
        else:
            console.print(schedules_table(views))

    run(show, connection(ctx))


@schedule_app.command("describe")
def describe(
    ctx: typer.Context,
    model: ModelArgument,
    as_json: JsonOption = False,
) -> None:
    """One schedule: settings, state, counters, recent runs and what they found."""

    async def show(client: Client) -> None:
        _show(await Schedules(client).describe(model), as_json)

    run(show, connection(ctx))


@schedule_app.command("pause")
def pause(
    ctx: typer.Context,
    model: ModelArgument,
    note: NoteOption = "",
    as_json: JsonOption = False,
) -> None:
    """Stop scheduled runs (trigger and backfill still work) until unpause."""

    async def act(client: Client) -> None:
        _show(await Schedules(client).pause(model, note), as_json)

    run(act, connection(ctx))


@schedule_app.command("unpause")
def unpause(
    ctx: typer.Context,
    model: ModelArgument,
    note: NoteOption = "",
    as_json: JsonOption = False,
) -> None:
    """Resume scheduled runs."""

    async def act(client: Client) -> None:
        _show(await Schedules(client).unpause(model, note), as_json)

    run(act, connection(ctx))


@schedule_app.command("trigger")
def trigger(
    ctx: typer.Context,
    model: ModelArgument,
    overlap: Annotated[
        OverlapPolicy | None,
        typer.Option(help="Override the overlap policy for this run"),
    ] = None,
) -> None:
    """Run the schedule's action now."""

    async def act(client: Client) -> None:
        await Schedules(client).trigger(model, overlap)
        console.print(f"triggered schedule-{model}: `retrain schedule describe {model}` shows it")

    run(act, connection(ctx))


def _utc(value: datetime) -> datetime:
    # Schedules, cron and the scheduled times are UTC unless told otherwise.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@schedule_app.command("backfill")
def backfill(
    ctx: typer.Context,
    model: ModelArgument,
    start: Annotated[
        datetime, typer.Option(formats=TIME_FORMATS, help="After this time (UTC unless given)")
    ],
    end: Annotated[
        datetime, typer.Option(formats=TIME_FORMATS, help="Up to this time (UTC unless given)")
    ],
    overlap: Annotated[
        OverlapPolicy, typer.Option(help="allow-all: every backfilled time delivers")
    ] = OverlapPolicy.ALLOW_ALL,
) -> None:
    """Run now the times the schedule would have run after START up to END.

    The coordinator ignores times it already received (the event id is the model and the
    scheduled time), so a repeated backfill changes nothing."""

    try:
        check_backfill_range(_utc(start), _utc(end))
    except ValueError as error:
        raise fail(str(error), code=2) from None

    async def act(client: Client) -> None:
        await Schedules(client).backfill(model, _utc(start), _utc(end), overlap)
        console.print(f"backfilling schedule-{model} from {_utc(start)} to {_utc(end)}")

    run(act, connection(ctx))


@schedule_app.command("delete")
def delete(
    ctx: typer.Context,
    model: ModelArgument,
) -> None:
    """Delete the schedule (runs already started finish; the coordinator stays)."""

    async def act(client: Client) -> None:
        await Schedules(client).delete(model)
        console.print(f"deleted schedule-{model}")

    run(act, connection(ctx))
