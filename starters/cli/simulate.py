"""`retrain simulate SPEC STREAM`: replay a labelled stream through the model's adaptive policy and
coordinator rules, offline; print when it retrains and why, and what it costs against never,
every batch, the best fixed period and the hindsight oracle; write an HTML page with the plot."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from activities.specs import SpecError, read_spec_file
from starters.api.simulate import WINDOW, SimulationReport, load_stream, render_html, run
from starters.api.streams import StreamError
from starters.cli.common import JsonOption, console, fail, print_json


def simulate(
    spec_file: Annotated[Path, typer.Argument(help="The model spec (TOML or JSON)")],
    stream_file: Annotated[
        Path, typer.Argument(help="A labelled Parquet stream: features, label, timestamps")
    ],
    period: Annotated[
        str | None, typer.Option(help="Decision period (a pandas frequency: 1D, 6h, 1W)")
    ] = "1D",
    batch_size: Annotated[
        int | None, typer.Option(help="Rows per decision period instead of a time period")
    ] = None,
    window: Annotated[int, typer.Option(help="Batches a model is trained on", min=1)] = WINDOW,
    value_per_error: Annotated[
        float | None,
        typer.Option(help="What an error costs (sets or overrides trigger_policy.adaptive)"),
    ] = None,
    label: Annotated[str | None, typer.Option(help="Label column (default: the spec's)")] = None,
    time_column: Annotated[
        str | None, typer.Option("--time", help="Timestamp column (default: the spec's)")
    ] = None,
    html: Annotated[
        Path | None, typer.Option(help="Where to write the HTML page (default: beside the stream)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Replay a labelled stream through the spec's adaptive policy and coordinator rules."""
    try:
        spec = read_spec_file(spec_file)
        stream = load_stream(
            spec,
            stream_file,
            period=None if batch_size else period,
            batch_size=batch_size,
            label=label,
            time_column=time_column,
        )
        report = run(spec, stream, value_per_error=value_per_error, window=window)
    except (SpecError, StreamError, ValueError) as error:
        raise fail(str(error), code=2) from None
    page = html or stream_file.with_suffix(".simulation.html")
    page.write_text(render_html(report))
    if as_json:
        data = asdict(report)
        data["html"] = str(page)
        print_json(json.loads(json.dumps(data, default=str)))
        return
    _print(report, page)


def _print(report: SimulationReport, page: Path) -> None:
    console.print(
        Text(
            f"{report.model}: {report.stream}; a model trained on the last {report.window} "
            f"batches; an error costs {report.value_per_error:g} {report.currency}, a "
            f"retraining {report.retraining_cost:g} {report.currency}"
        )
    )
    table = Table(title="when it retrains, and why")
    for column in ("batch", "at", "action", "why"):
        table.add_column(column, overflow="fold")
    for decision in report.decisions:
        if decision.action.value == "ignore":
            continue
        table.add_row(
            str(decision.batch),
            decision.at.strftime("%Y-%m-%d %H:%M"),
            decision.action.value,
            Text(decision.message),
        )
    console.print(table)
    costs = Table(title=f"cost ({report.currency}) against the hindsight oracle")
    for column in ("policy", "retrainings", "errors", "cost", "cost / oracle"):
        costs.add_column(column, justify="left" if column == "policy" else "right")
    for cost in report.costs:
        costs.add_row(
            cost.name,
            str(cost.retrainings),
            f"{cost.errors:,}",
            f"{cost.cost:,.2f}",
            f"{cost.ratio:.3f}",
        )
    console.print(costs)
    console.print(
        Text(
            f"{report.batches - report.window - 1} decisions in {report.decision_seconds:.3f} s "
            f"(the models' error matrix: {report.matrix_seconds:.1f} s); plot: {page}"
        )
    )
