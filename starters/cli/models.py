"""`retrain models validate|register|list|show|schema|example-data`: the model specs the loops
retrain from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from temporalio.client import Client

from activities.backends import missing_backend
from activities.specs import SpecError, SpecStore, read_spec_file
from starters.api.connection import retrain_home
from starters.api.coordinators import Coordinators
from starters.api.drift import DriftMonitors
from starters.cli.common import (
    JsonOption,
    ModelArgument,
    connection,
    console,
    errors,
    fail,
    print_json,
    problems_text,
    run,
)
from starters.cli.render import loops as render
from workflows.common.models import format_duration
from workflows.spec.models import ModelSpec
from workflows.spec.schema import spec_json_schema_text

models_app = typer.Typer(
    help="Validate, register and show model specs (examples/ has one per backend).",
    no_args_is_help=True,
)

SpecFile = Annotated[
    Path,
    typer.Argument(
        help="Model spec (.yaml, .yml, .toml or .json)",
        metavar="SPEC_FILE",
        exists=True,
        dir_okay=False,
    ),
]


def _read(path: Path) -> ModelSpec:
    try:
        return read_spec_file(path)
    except SpecError as err:
        if err.problems:
            raise fail(problems_text(err.problems, err.headline), code=2) from None
        raise fail(str(err), code=2) from None


@models_app.command("validate")
def models_validate(spec_file: SpecFile) -> None:
    """Check a spec file and list every problem; changes nothing."""
    spec = _read(spec_file)
    console.print(f"[green]valid[/]: model {spec.name} ({spec.task.value}, {spec.backend})")
    _warn_if_backend_missing(spec)


def _warn_if_backend_missing(spec: ModelSpec) -> None:
    # A warning: the workers that will serve the model may be installed elsewhere.
    if (missing := missing_backend(spec.backend)) is not None:
        errors.print(f"[yellow]warning:[/] {escape(missing)}")


@models_app.command("register")
def models_register(ctx: typer.Context, spec_file: SpecFile) -> None:
    """Validate and register a spec; the coordinator adopts its trigger policy and the drift
    monitor starts."""
    spec = _read(spec_file)
    _warn_if_backend_missing(spec)
    path = SpecStore(retrain_home()).register(spec)
    console.print(f"registered {spec.name} ({spec.content_hash()[:12]}) at {path}")

    async def adopt_policy(client: Client) -> None:
        await Coordinators(client).set_policy(
            spec.name, spec.trigger_policy.model_dump(mode="json")
        )
        await DriftMonitors(client).start(spec.name)

    run(adopt_policy, connection(ctx))
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


@models_app.command("schema")
def models_schema(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write it here instead of stdout"),
    ] = None,
) -> None:
    """Print the JSON Schema of a spec file, for editors to complete and check specs."""
    text = spec_json_schema_text()
    if output is None:
        # Plain stdout: rich would wrap long lines and highlight the JSON.
        typer.echo(text, nl=False)
        return
    output.write_text(text)
    console.print(f"wrote the spec's JSON Schema to {output}")


@models_app.command("example-data")
def models_example_data(
    model: ModelArgument,
    days: Annotated[int, typer.Option(min=7, max=365, help="Days of labelled history")] = 30,
    rows_per_day: Annotated[int, typer.Option(min=50, max=100_000, help="Rows a day")] = 400,
    seed: Annotated[int, typer.Option(help="Seed of the generator")] = 0,
) -> None:
    """Write synthetic labelled data for examples/local/credit.yaml (the demo's loan stream)
    under data/MODEL/ in the retrain home: daily partitions up to today, a baseline holdout
    and a golden set."""
    # Imported here: river and the generator would slow every other command.
    from starters.demo.synthetic import write_demo_dataset

    home = retrain_home()
    today = datetime.now(UTC).date()
    start = today - timedelta(days=days - 1)
    spec = write_demo_dataset(
        home, model, start, days, drift_day=None, rows_per_day=rows_per_day, seed=seed
    )
    console.print(
        f"wrote {days} days ({start} .. {today}) of labelled data for {model} under "
        f"{home / 'data' / model}, with a baseline holdout and a golden set"
    )
    console.print(
        f"features: {', '.join(spec.feature_names)}; label: {spec.label}; "
        f"segment: {spec.segment_column}"
    )
