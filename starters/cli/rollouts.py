"""`retrain rollout status|pause|resume|approve|promote|abort MODEL`: steer a staged rollout."""

from __future__ import annotations

from typing import Annotated

import typer
from temporalio.client import Client

from starters.api.rollouts import Rollouts
from starters.cli.common import (
    JsonOption,
    ModelArgument,
    connection,
    console,
    print_json,
    run,
)
from workflows.rollout.details import render_rollout_details
from workflows.rollout.models import RolloutCommand, RolloutVerb

rollout_app = typer.Typer(
    help="Show and steer a model's staged rollout (the loop's deployment).",
    no_args_is_help=True,
)

NumberOption = Annotated[
    int | None,
    typer.Option("--loop", min=1, help="Loop number (default: the model's active loop)"),
]
OperatorOption = Annotated[str, typer.Option(help="Who decides (kept in the rollout record)")]
ReasonOption = Annotated[str, typer.Option(help="Why (kept in the rollout record)")]


@rollout_app.command("status")
def status(
    ctx: typer.Context,
    model: ModelArgument,
    loop: NumberOption = None,
    as_json: JsonOption = False,
) -> None:
    """Step, weights and every canary verdict so far."""

    async def show(client: Client) -> None:
        view = await Rollouts(client).view(model, loop)
        if as_json:
            print_json(view.model_dump(mode="json"))
        else:
            console.print(render_rollout_details(view), markup=False, highlight=False)

    run(show, connection(ctx))


def _command(verb: RolloutVerb, help_text: str) -> None:
    def send_command(
        ctx: typer.Context,
        model: ModelArgument,
        operator: OperatorOption,
        reason: ReasonOption = "",
        loop: NumberOption = None,
    ) -> None:
        command = RolloutCommand(operator=operator, reason=reason)

        async def send(client: Client) -> None:
            record = await Rollouts(client).command(model, verb, command, loop)
            console.print(f"[green]{verb}[/] accepted from {record.operator}")

        run(send, connection(ctx))

    send_command.__doc__ = help_text
    rollout_app.command(verb)(send_command)


_command("pause", "Hold at the current weights (analysis and automatic rollback go on).")
_command("resume", "Let a paused rollout move on.")
_command("approve", "Continue a rollout held on an inconclusive canary.")
_command("promote", "Skip the remaining stages: 100% now, then promotion and the watch.")
_command("abort", "Roll back to 100% champion now.")
