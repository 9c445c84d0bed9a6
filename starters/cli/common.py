"""What every `retrain` command shares: consoles, options, the connection settings the root
callback reads (`retrain --address H:P --namespace N COMMAND`), and turning errors into one line."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from temporalio.client import (
    Client,
    RPCError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.runtime import Runtime
from temporalio.service import RPCStatusCode

from starters.api.connection import DEFAULT_ADDRESS, connect
from starters.api.known_models import UnknownModel, registered_models, require_known
from starters.api.observability import (
    TracingUnavailable,
    client_interceptors,
    configure_logging,
    setup_tracing,
)
from workflows.common.models import validation_problems
from workflows.common.names import TASK_QUEUE, validate_model_name

console = Console()
errors = Console(stderr=True)
T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")]
LogFormatOption = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        metavar="[text|json]",
        help="Log lines as text or JSON objects (default: RETRAIN_LOG_FORMAT, else text)",
    ),
]


def setup_logging(log_format: str | None) -> None:
    try:
        configure_logging(log_format)
    except ValueError as err:
        raise fail(str(err), code=2) from None


def _model_name(value: str) -> str:
    try:
        return validate_model_name(value)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


ModelArgument = Annotated[
    str, typer.Argument(help="Model name", metavar="MODEL", callback=_model_name)
]


def _registered_model(value: str) -> str:
    name = _model_name(value)
    try:
        require_known(registered_models(), name)
    except UnknownModel as err:
        raise typer.BadParameter(str(err)) from None
    return name


# For the commands that start something for the model (a coordinator, a monitor, a schedule):
# a name no registered spec carries is refused (exit 2) before Temporal is even contacted.
RegisteredModelArgument = Annotated[
    str,
    typer.Argument(
        help="Model name (a registered spec's)", metavar="MODEL", callback=_registered_model
    ),
]


@dataclass(frozen=True)
class Connection:
    """Where the commands find Temporal: the root options, `None` meaning "from the environment"
    (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, a TEMPORAL_PROFILE, else the local dev server)."""

    address: str | None = None
    namespace: str | None = None

    async def connect(self, runtime: Runtime | None = None) -> Client:
        # Traced when OTEL_EXPORTER_OTLP_ENDPOINT says where to (the worker and the gateway set
        # their own service names first); nothing otherwise.
        try:
            interceptors = client_interceptors(setup_tracing("retrain-cli"))
        except TracingUnavailable as err:
            raise CliError(str(err)) from None
        return await connect(self.address, self.namespace, runtime, interceptors)


def connection(ctx: typer.Context) -> Connection:
    """The settings the root callback stored; the environment's when a group's Typer app is
    invoked without the root (`CliRunner().invoke(slots_app, ...)`)."""
    found = ctx.find_object(Connection)
    return found if found is not None else Connection()


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 1."""


def fail(message: str, code: int = 1) -> typer.Exit:
    # Escaped: messages quote user input and validation patterns such as `[a-z-]`. Not wrapped
    # by rich (the terminal wraps): a path or an id in an error stays one piece to copy.
    errors.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def fail_validation(err: ValidationError, what: str = "") -> typer.Exit:
    """Every problem of a validation error on its own line (exit 2)."""
    return fail(problems_text(validation_problems(err), what or f"invalid {err.title}"), code=2)


def problems_text(problems: list[str], headline: str) -> str:
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    return f"{headline} ({count}):\n" + "\n".join(f"  - {p}" for p in problems)


def run(
    action: Callable[[Client], Awaitable[T]],
    settings: Connection,
    runtime: Runtime | None = None,
) -> T:
    """Connect, run, and turn Temporal's errors into one clear line and a non-zero exit."""

    async def main() -> T:
        target = settings.address or os.environ.get("TEMPORAL_ADDRESS") or DEFAULT_ADDRESS
        try:
            client = await settings.connect(runtime)
        except RuntimeError as err:
            raise CliError(
                f"cannot reach Temporal at {target} ({err}); is `retrain server` running?"
            ) from None
        return await action(client)

    try:
        return asyncio.run(main())
    except CliError as err:
        raise fail(str(err)) from None
    except ValidationError as err:
        raise fail_validation(err) from None
    except UnknownModel as err:  # a name no registered spec carries: the user's mistake
        raise fail(str(err), code=2) from None
    except LookupError as err:  # a loop or record that is not there (starters.api.loops)
        raise fail(str(err)) from None
    except ValueError as err:  # our validation at the edge (policy changes, model names)
        raise fail(str(err), code=2) from None
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        raise fail(f"rejected: {getattr(cause, 'message', cause)}", code=2) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise fail(
            f"no worker answered in time: is `retrain worker` running on task queue '{TASK_QUEUE}'?"
        ) from None
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise fail(f"not found (Temporal says: {err.message})") from None
        raise fail(f"Temporal error ({err.status.name}): {err.message}") from None


def print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))
