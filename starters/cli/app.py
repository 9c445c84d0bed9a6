"""`retrain`: run the embedded server and worker, send triggers, inspect and steer coordinators."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from temporalio.client import (
    Client,
    RPCError,
)

from starters.api.connection import retrain_home
from starters.api.coordinators import Coordinators, new_event_id
from starters.api.dev_server import DevServer, stop
from starters.cli import drift as cli_drift
from starters.cli import gateway as cli_gateway
from starters.cli import loops as cli_loops
from starters.cli import rollouts as cli_rollouts
from starters.cli import schedule as cli_schedule
from starters.cli import serve as cli_serve
from starters.cli import slots as cli_slots
from starters.cli.common import (
    AddressOption,
    CliError,
    JsonOption,
    ModelArgument,
    NamespaceOption,
    console,
    errors,
    fail,
    print_json,
    run,
)
from starters.cli.render import coordinators as render
from workflows.common.models import describe_validation_error
from workflows.common.names import TASK_QUEUE
from workflows.coordinator.triggers import AlarmState, Severity, TriggerEvent, TriggerKind

app = typer.Typer(
    help="Adaptive retraining on Temporal: coordinators, triggers and decisions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
policy_app = typer.Typer(help="Show or change a model's trigger policy.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(cli_loops.models_app, name="models")
app.add_typer(cli_rollouts.rollout_app, name="rollout")
app.add_typer(cli_drift.drift_app, name="drift")
app.add_typer(cli_schedule.schedule_app, name="schedule")
app.add_typer(cli_slots.slots_app, name="slots")
for command in (cli_loops.approve, cli_loops.reject, cli_loops.loops, cli_loops.audit):
    app.command()(command)
app.command()(cli_serve.serve)
app.command()(cli_gateway.gateway)
app.add_typer(cli_gateway.dlq_app, name="dlq")

# ---------------------------------------------------------------- server and worker


@app.command()
def server(
    port: Annotated[int, typer.Option(help="gRPC frontend port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Web UI port")] = 8233,
    ip: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    namespace: Annotated[str, typer.Option(help="Namespace to create")] = "default",
) -> None:
    """Run the embedded Temporal dev server (Web UI, SQLite under .retrain/) until Ctrl-C."""
    dev = DevServer(home=retrain_home(), ip=ip, port=port, ui_port=ui_port, namespace=namespace)
    # SIGTERM (docker stop, systemd, kill) shuts the server down as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        process = dev.spawn()
    except (RuntimeError, FileNotFoundError) as err:
        raise fail(str(err)) from None
    try:
        dev.wait_ready(process)
        console.print(f"Temporal dev server on [bold]{dev.address}[/] (namespace {namespace})")
        console.print(f"Web UI: [bold link={dev.ui_url}]{dev.ui_url}[/]")
        console.print(f"Executions persist in {dev.db_file}. Ctrl-C to stop.")
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(process)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _host_port(value: str | None) -> str | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:9464)")
    return value


@app.command()
def worker(
    address: AddressOption = None,
    namespace: NamespaceOption = None,
    task_queue: Annotated[str, typer.Option(help="Task queue to poll")] = TASK_QUEUE,
    metrics_address: Annotated[
        str | None,
        typer.Option(
            help="Serve Prometheus /metrics (the SDK's and ours) on HOST:PORT, e.g. 0.0.0.0:9464",
            envvar="RETRAIN_METRICS_ADDRESS",
            callback=_host_port,
        ),
    ] = None,
    max_concurrent_trainings: Annotated[
        int | None,
        typer.Option(
            help="Limit trainings across every model to K at once (the `training-slots` "
            "workflow; loops wait in priority order). Unset: no limit, or the one already set",
            envvar="RETRAIN_MAX_CONCURRENT_TRAININGS",
            min=1,
            max=1000,
        ),
    ] = None,
) -> None:
    """Run a worker (Ctrl-C / SIGTERM for a graceful shutdown)."""
    from workers.fleet_metrics import ApprovalGauges
    from workers.search_attributes import ensure_search_attributes
    from workers.telemetry import metrics_runtime
    from workers.worker import build_worker, run_until_signalled

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    runtime = None
    if metrics_address is not None:
        try:
            runtime = metrics_runtime(metrics_address)
        except ValueError as err:  # the SDK's word for a taken port or an unusable address
            raise fail(f"cannot serve metrics on {metrics_address}: {err}") from None

    async def main(client: Client) -> None:
        try:
            added = await ensure_search_attributes(client)
            if added:
                console.print(f"registered search attributes: {', '.join(added)}")
        except RPCError as err:
            errors.print(
                f"[yellow]warning:[/] could not check search attributes ({err.message}); "
                "register ModelName, TriggerKind, LoopStage, RetrainPaused, ActiveLoop yourself"
            )
        target = client.service_client.config.target_host
        console.print(f"worker on task queue [bold]{task_queue}[/] at {target}")
        if max_concurrent_trainings is not None:
            from starters.api.slots import TrainingSlotsClient

            await TrainingSlotsClient(client, task_queue).ensure(max_concurrent_trainings)
            console.print(f"at most {max_concurrent_trainings} trainings at once across models")
        background = []
        if runtime is not None:
            console.print(f"metrics on http://{metrics_address}/metrics")
            gauges = ApprovalGauges(client, runtime.metric_meter)
            background.append(asyncio.create_task(gauges.run()))
        try:
            await run_until_signalled(
                build_worker(client, home=retrain_home(), task_queue=task_queue)
            )
        finally:
            for task in background:
                task.cancel()

    run(main, address, namespace, runtime)


# ---------------------------------------------------------------- triggers


def _parse_metadata(pairs: list[str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"--metadata takes KEY=VALUE, got {pair!r}", code=2)
        try:
            metadata[key] = json.loads(value)
        except json.JSONDecodeError:
            metadata[key] = value
    return metadata


@app.command()
def trigger(
    model: ModelArgument,
    kind: Annotated[TriggerKind, typer.Option("--kind", "-k", help="Trigger kind")],
    priority: Annotated[int, typer.Option("--priority", "-p", help="1 (highest) .. 5")] = 3,
    event_id: Annotated[str | None, typer.Option(help="Dedup key (default: a new uuid)")] = None,
    source: Annotated[str, typer.Option(help="Who sends it")] = "cli",
    metadata: Annotated[list[str], typer.Option("--metadata", "-m", help="KEY=VALUE")] = [],  # noqa: B006
    uri: Annotated[str | None, typer.Option(help="data_arrived: object uri")] = None,
    rows: Annotated[int | None, typer.Option(help="data_arrived: row count")] = None,
    size_bytes: Annotated[int | None, typer.Option(help="data_arrived: size")] = None,
    score: Annotated[float | None, typer.Option(help="drift: score")] = None,
    severity: Annotated[Severity | None, typer.Option(help="drift: severity")] = None,
    feature: Annotated[list[str], typer.Option("--feature", help="drift: drifted feature")] = [],  # noqa: B006
    endpoint: Annotated[str | None, typer.Option(help="drift: affected endpoint")] = None,
    window_start: Annotated[
        datetime | None, typer.Option(help="drift: anomaly window start (UTC)")
    ] = None,
    window_end: Annotated[
        datetime | None, typer.Option(help="drift: anomaly window end (UTC)")
    ] = None,
    alarm_name: Annotated[str | None, typer.Option(help="alarm: name")] = None,
    alarm_state: Annotated[AlarmState, typer.Option(help="alarm: state")] = AlarmState.ALARM,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the decision (update) or just signal")
    ] = True,
    address: AddressOption = None,
    namespace: NamespaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send a trigger event; starts the model's coordinator if needed and prints the decision."""
    fields: dict[str, Any] = {
        "kind": kind,
        "source": source,
        "event_id": event_id or new_event_id(),
        "occurred_at": datetime.now().astimezone(),
        "priority": priority,
        "metadata": _parse_metadata(metadata),
    }
    if kind is TriggerKind.DATA_ARRIVED:
        fields["data"] = {"uri": uri, "rows": rows, "size_bytes": size_bytes}
    elif kind is TriggerKind.DRIFT:
        utc = [w.astimezone() if w else None for w in (window_start, window_end)]
        fields["drift"] = {
            "score": score,
            "severity": severity,
            "features": feature,
            "endpoint": endpoint,
            "window_start": utc[0],
            "window_end": utc[1],
        }
    elif kind is TriggerKind.ALARM:
        fields["alarm"] = {"name": alarm_name, "state": alarm_state}
    try:
        event = TriggerEvent.model_validate(fields)
    except ValidationError as err:
        raise fail(describe_validation_error(err), code=2) from None

    async def send(client: Client) -> None:
        coordinators = Coordinators(client)
        if not wait:
            await coordinators.send_trigger(model, event)
            console.print(f"signalled coordinator-{model} (event {event.event_id})")
            return
        decision = await coordinators.trigger(model, event)
        if as_json:
            print_json(decision.model_dump(mode="json"))
        else:
            console.print(render.decision_panel(decision))

    run(send, address, namespace)


# ---------------------------------------------------------------- status and control


@app.command()
def status(
    model: Annotated[
        str | None, typer.Argument(help="Model (omit to list all coordinators)")
    ] = None,
    decisions: Annotated[int, typer.Option(help="How many recent decisions to show")] = 15,
    address: AddressOption = None,
    namespace: NamespaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """All coordinators (visibility), or one coordinator's state and recent decisions."""

    async def show(client: Client) -> None:
        coordinators = Coordinators(client)
        if model is None:
            rows = await coordinators.list_coordinators()
            if as_json:
                print_json([row.__dict__ for row in rows])
            else:
                console.print(render.coordinators_table(rows))
            return
        state = await coordinators.status(model)
        recent = await coordinators.decisions(model, limit=decisions)
        if as_json:
            print_json(
                {
                    "status": state.model_dump(mode="json"),
                    "decisions": [d.model_dump(mode="json") for d in recent],
                }
            )
            return
        console.print(render.status_table(state))
        console.print(render.decisions_table(recent, title=f"last {len(recent)} decisions"))

    run(show, address, namespace)


@app.command()
def pause(
    model: ModelArgument,
    reason: Annotated[str, typer.Option(help="Why (shown in status and decisions)")] = "",
    by: Annotated[str, typer.Option(help="Who")] = getpass.getuser(),
    address: AddressOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Pause a coordinator: triggers are suppressed, pending work waits until resume."""

    async def act(client: Client) -> None:
        state = await Coordinators(client).pause(model, reason=reason, by=by)
        console.print(render.status_table(state))

    run(act, address, namespace)


@app.command()
def resume(
    model: ModelArgument,
    by: Annotated[str, typer.Option(help="Who")] = getpass.getuser(),
    address: AddressOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Resume a paused coordinator; work that became due meanwhile is evaluated now."""

    async def act(client: Client) -> None:
        state = await Coordinators(client).resume(model, by=by)
        console.print(render.status_table(state))

    run(act, address, namespace)


@policy_app.command("show")
def policy_show(
    model: ModelArgument,
    address: AddressOption = None,
    namespace: NamespaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the policy the coordinator applies now."""

    async def show(client: Client) -> None:
        state = await Coordinators(client).status(model)
        if as_json:
            print_json(state.policy.model_dump(mode="json"))
        else:
            console.print(render.policy_table(state.policy))
            console.print(f"policy version {state.policy_version}")

    run(show, address, namespace)


@policy_app.command("set")
def policy_set(
    model: ModelArgument,
    changes: Annotated[
        list[str] | None,
        typer.Argument(
            help="FIELD=VALUE pairs, e.g. cooldown=2h batch_size=50 cost.hourly_rate=3.5"
        ),
    ] = None,
    file: Annotated[Path | None, typer.Option(help="JSON file with fields to change")] = None,
    address: AddressOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Change policy fields (validated; the rest stay as they are)."""
    patch: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise fail(f"cannot read {file}: {err}", code=2) from None
        if not isinstance(loaded, dict):
            raise fail(f"{file} must hold a JSON object", code=2)
        patch.update(loaded)
    for pair in changes or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"expected FIELD=VALUE, got {pair!r}", code=2)
        _set_path(patch, key.split("."), _parse_value(value))
    if not patch:
        raise fail("nothing to change: give FIELD=VALUE pairs or --file", code=2)

    async def act(client: Client) -> None:
        coordinators = Coordinators(client)
        state = await coordinators.set_policy(model, patch)
        console.print(render.policy_table(state.policy))
        console.print(f"policy version {state.policy_version}")

    run(act, address, namespace)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # durations ("2h"), time zones, currencies


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise fail(f"cannot set {'.'.join(path)}: {key} is not an object", code=2)
    target[path[-1]] = value


# ---------------------------------------------------------------- demo


@app.command()
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


def main() -> None:
    code = 0
    try:
        app()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except CliError as err:
        errors.print(f"[bold red]error:[/] {escape(str(err))}")
        code = 1
    # Skip interpreter finalization: the Temporal client's Rust threads can crash a short-lived
    # process while Python tears down (temporalio/sdk-python#300), turning a finished command
    # into a segfault exit code. Everything the command owns is closed by now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
