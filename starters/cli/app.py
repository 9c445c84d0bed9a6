"""`retrain`: the root app. Its callback owns the connection options
(`retrain --address H:P --namespace N COMMAND ...`); every command lives in its group's module."""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from rich.markup import escape

from starters.api.observability import shutdown_tracing
from starters.cli import (
    coordinator,
    demo,
    drift,
    gateway,
    loops,
    models,
    rollouts,
    schedule,
    serve,
    server,
    simulate,
    slots,
)
from starters.cli.common import CliError, Connection, errors
from starters.cli.help import readable_placeholders

app = typer.Typer(
    help="Adaptive retraining on Temporal: coordinators, triggers and decisions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def versions() -> str:
    """This package's version and the Temporal SDK's (what a bug report needs)."""

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return f"retrain {of('adaptive-retraining')} (temporalio {of('temporalio')})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(versions())
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    address: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT", help="Temporal frontend host:port (default: TEMPORAL_ADDRESS)"
        ),
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Namespace (default: TEMPORAL_NAMESPACE)")
    ] = None,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    # No envvar= here: `connect` reads TEMPORAL_* (and TEMPORAL_PROFILE) itself, as the
    # `temporal` CLI does, so None means "from the environment".
    ctx.obj = Connection(address, namespace)


# Registration order is the order `retrain --help` lists them in.
for command in (
    loops.approve,
    loops.reject,
    loops.loops,
    loops.audit,
    serve.serve,
    gateway.gateway,
    server.server,
    server.worker,
    coordinator.trigger,
    coordinator.status,
    coordinator.pause,
    coordinator.resume,
    demo.demo,
    simulate.simulate,
):
    app.command()(command)
app.add_typer(coordinator.policy_app, name="policy")
app.add_typer(models.models_app, name="models")
app.add_typer(rollouts.rollout_app, name="rollout")
app.add_typer(drift.drift_app, name="drift")
app.add_typer(schedule.schedule_app, name="schedule")
app.add_typer(slots.slots_app, name="slots")
app.add_typer(gateway.dlq_app, name="dlq")


def cli_command() -> Any:
    """The `retrain` command tree, with readable value placeholders in its help."""
    return readable_placeholders(typer.main.get_command(app))


def main() -> None:
    code = 0
    try:
        cli_command()(prog_name="retrain")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except CliError as err:
        errors.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        code = 1
    shutdown_tracing()  # buffered spans go out before os._exit skips every exit hook
    # Skip interpreter finalization: the Temporal client's Rust threads can crash a short-lived
    # process while Python tears down (temporalio/sdk-python#300), turning a finished command
    # into a segfault exit code. Everything the command owns is closed by now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
