"""`retrain demo`: the embedded server, a worker and a model's retraining story end to end."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import typer

from starters.api.connection import retrain_home
from starters.cli.common import console


def demo(
    auto_approve: Annotated[
        bool, typer.Option(help="Approve as the demo's reviewer instead of waiting for you")
    ] = False,
    keep_running: Annotated[
        bool, typer.Option(help="Keep server and worker up afterwards to explore the Web UI")
    ] = False,
    bad_candidate: Annotated[
        bool,
        typer.Option(
            help="Also ship a release that passes the offline gates but breaks live "
            "(rolled back at 5%)"
        ),
    ] = True,
) -> None:
    """Run the embedded server and a worker, then a model's retraining story end to end."""
    # Imported here: the demo's stack (training, serving) would slow every other command.
    from starters.demo.scenario import run_demo

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_demo(
                retrain_home(),
                keep_running=keep_running,
                auto_approve=auto_approve,
                bad_candidate=bad_candidate,
                console=console,
            )
        )
