"""`retrain models|approve|reject|loops|audit`: model specs and the loops that retrain them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from temporalio.client import Client

from activities.specs import SpecError, SpecStore, read_spec_file
from starters.api.connection import retrain_home
from starters.api.coordinators import Coordinators
from starters.api.drift import DriftMonitors
from starters.api.loops import Loops, read_audit
from starters.cli.common import (
    AddressOption,
    JsonOption,
    ModelArgument,
    NamespaceOption,
    console,
    fail,
    print_json,
    run,
)
from starters.cli.render import loops as render
from workflows.common.models import format_duration
from workflows.loop.models import ReviewDecision
from workflows.spec.models import ModelSpec

models_app = typer.Typer(help="Validate, register and show model specs.", no_args_is_help=True)

SpecFile = Annotated[
    Path, typer.Argument(help="Model spec (.toml or .json)", exists=True, dir_okay=False)
]
LoopOption = Annotated[
    int | None,
    typer.Option("--loop", min=1, help="Loop number (default: the loop awaiting approval)"),
]
ReviewerOption = Annotated[
    str, typer.Option(help="Who decides (checked against the model's reviewer allow-list)")
]
CommentOption = Annotated[str, typer.Option(help="Why (kept in the audit record)")]


def _read(path: Path) -> ModelSpec:
    try:
        return read_spec_file(path)
    except SpecError as err:
        raise fail(str(err), code=2) from None


@models_app.command("validate")
def models_validate(spec_file: SpecFile) -> None:
    """Check a spec file and list every problem; changes nothing."""
    spec = _read(spec_file)
    console.print(f"[green]valid[/]: model {spec.name} ({spec.task.value}, {spec.backend})")


@models_app.command("register")
def models_register(
    spec_file: SpecFile,
    address: AddressOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Validate and register a spec; the coordinator adopts its trigger policy and the drift
    monitor starts."""
    spec = _read(spec_file)
    path = SpecStore(retrain_home()).register(spec)
    console.print(f"registered {spec.name} ({spec.content_hash()[:12]}) at {path}")

    async def adopt_policy(client: Client) -> None:
        await Coordinators(client).set_policy(
            spec.name, spec.trigger_policy.model_dump(mode="json")
        )
        await DriftMonitors(client).start(spec.name)

    run(adopt_policy, address, namespace)
    console.print(f"coordinator-{spec.name} uses the spec's trigger policy")
    schedule = (
        f"checks every {format_duration(spec.drift.interval)}"
        if spec.drift.enabled
        else "scheduled checks off (`retrain drift check` still works)"
    )
    console.print(f"drift-{spec.name} monitors captured traffic: {schedule}")


@models_app.command("list")
def models_list(as_json: JsonOption = False) -> None:
    """The registered specs."""
    store = SpecStore(retrain_home())
    specs = [spec for name in store.names() if (spec := store.get(name)) is not None]
    if as_json:
        print_json([spec.model_dump(mode="json") for spec in specs])
        return
    console.print(render.specs_table(specs))


@models_app.command("show")
def models_show(model: ModelArgument) -> None:
    """One registered spec, as JSON."""
    spec = SpecStore(retrain_home()).get(model)
    if spec is None:
        raise fail(f"model {model!r} is not registered: run `retrain models register FILE`")
    print_json(spec.model_dump(mode="json"))


def _review(
    verb: Literal["approve", "reject"],
    model: str,
    loop: int | None,
    reviewer: str,
    comment: str,
    address: str | None,
    namespace: str | None,
) -> None:
    decision = ReviewDecision(reviewer=reviewer, comment=comment)

    async def send(client: Client) -> None:
        record = await Loops(client, retrain_home()).review(model, verb, decision, loop)
        console.print(
            f"[green]{record.decision}d[/] by {record.reviewer} at {record.at:%Y-%m-%d %H:%M:%S}"
        )

    run(send, address, namespace)


def approve(
    model: ModelArgument,
    reviewer: ReviewerOption,
    loop: LoopOption = None,
    comment: CommentOption = "",
    address: AddressOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Approve the candidate of a loop awaiting approval."""
    _review("approve", model, loop, reviewer, comment, address, namespace)


def reject(
    model: ModelArgument,
    reviewer: ReviewerOption,
    loop: LoopOption = None,
    comment: CommentOption = "",
    address: AddressOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Reject the candidate of a loop awaiting approval."""
    _review("reject", model, loop, reviewer, comment, address, namespace)


def loops(
    model: ModelArgument,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    address: AddressOption = None,
    namespace: NamespaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """The model's loops, newest first, with their stage and outcome."""

    async def show(client: Client) -> None:
        rows = await Loops(client, retrain_home()).list(model, limit)
        if as_json:
            print_json([row.__dict__ for row in rows])
        else:
            console.print(render.loops_table(model, rows))

    run(show, address, namespace)


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
