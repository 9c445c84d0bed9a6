"""`retrain drift check|performance|report|status MODEL`: run and read the drift monitor."""

from __future__ import annotations

from typing import Annotated

import typer
from temporalio.client import Client

from starters.api.drift import DriftMonitors
from starters.cli.common import (
    JsonOption,
    ModelArgument,
    RegisteredModelArgument,
    connection,
    console,
    print_json,
    run,
)
from starters.cli.render.drift import (
    drift_report_header,
    drift_report_table,
    monitor_status_table,
    performance_check_lines,
)
from workflows.drift.models import CheckRequest, DriftReport, PerformanceCheck

drift_app = typer.Typer(
    help="Drift of production data against the champion's reference profile.",
    no_args_is_help=True,
)

ReasonOption = Annotated[str, typer.Option(help="Why (kept in the monitor's history)")]
NotifyOption = Annotated[
    bool,
    typer.Option(
        "--notify/--no-notify",
        help="Send the result to the coordinator like a scheduled check (default) or only report",
    ),
]


def _print_report(report: DriftReport, as_json: bool) -> None:
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    for line in drift_report_header(report):
        console.print(line, highlight=False)
    console.print(drift_report_table(report))


@drift_app.command("check")
def check(
    ctx: typer.Context,
    model: RegisteredModelArgument,
    reason: ReasonOption = "on demand",
    notify: NotifyOption = True,
    as_json: JsonOption = False,
) -> None:
    """Check now (starting the model's monitor if needed) and print the report."""
    request = CheckRequest(reason=reason, notify_coordinator=notify)

    async def check_now(client: Client) -> DriftReport:
        return await DriftMonitors(client).check(model, request)

    _print_report(run(check_now, connection(ctx)), as_json)


@drift_app.command("performance")
def performance(
    ctx: typer.Context,
    model: ModelArgument,
    reason: ReasonOption = "on demand",
    notify: NotifyOption = True,
    as_json: JsonOption = False,
) -> None:
    """Measure the champion's quality on its labelled traffic now (captured answers joined
    with their feedback): realized metrics with intervals against the promotion's, the change
    detector, the label-free estimate; a degradation goes to the coordinator."""
    request = CheckRequest(reason=reason, notify_coordinator=notify)

    async def check_now(client: Client) -> PerformanceCheck:
        return await DriftMonitors(client).check_performance(model, request)

    result = run(check_now, connection(ctx))
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    for line in performance_check_lines(result):
        console.print(line, highlight=False)


@drift_app.command("report")
def report(
    ctx: typer.Context,
    model: ModelArgument,
    as_json: JsonOption = False,
) -> None:
    """The monitor's last report, as a table (its HTML page is linked in the header)."""

    async def last(client: Client) -> DriftReport | None:
        return (await DriftMonitors(client).status(model)).last_report

    found = run(last, connection(ctx))
    if found is None:
        console.print(f"no drift report yet for {model}: `retrain drift check {model}` runs one")
        raise typer.Exit(1)
    _print_report(found, as_json)


@drift_app.command("status")
def status(
    ctx: typer.Context,
    model: ModelArgument,
    as_json: JsonOption = False,
) -> None:
    """Schedule, recent checks and what the coordinator was told."""

    async def show(client: Client) -> None:
        current = await DriftMonitors(client).status(model)
        if as_json:
            print_json(current.model_dump(mode="json"))
        else:
            console.print(monitor_status_table(current))

    run(show, connection(ctx))
