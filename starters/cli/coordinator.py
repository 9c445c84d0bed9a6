"""`retrain trigger|status|pause|resume MODEL` and `retrain policy show|set MODEL`: send triggers
to a model's coordinator, inspect and steer it."""

from __future__ import annotations

import getpass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from temporalio.client import Client

from activities.coordinator.decisions import DecisionStore
from starters.api.connection import retrain_home
from starters.api.coordinators import Coordinators, new_event_id
from starters.cli.common import (
    JsonOption,
    ModelArgument,
    RegisteredModelArgument,
    connection,
    console,
    fail,
    fail_validation,
    print_json,
    run,
)
from starters.cli.render import coordinators as render
from workflows.common.messages import loads_bounded
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.triggers import AlarmState, Severity, TriggerEvent, TriggerKind

policy_app = typer.Typer(help="Show or change a model's trigger policy.", no_args_is_help=True)

# ---------------------------------------------------------------- triggers


def _parse_metadata(pairs: list[str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"--metadata takes KEY=VALUE, got {pair[:100]!r}", code=2)
        metadata[key] = _parse_value(value, f"--metadata {key[:50]}")
    return metadata


def trigger(
    ctx: typer.Context,
    model: RegisteredModelArgument,
    kind: Annotated[TriggerKind, typer.Option("--kind", "-k", help="Trigger kind")],
    priority: Annotated[int, typer.Option("--priority", "-p", help="1 (highest) .. 5")] = 3,
    event_id: Annotated[str | None, typer.Option(help="Dedup key (default: a new uuid)")] = None,
    source: Annotated[str, typer.Option(help="Who sends it")] = "cli",
    metadata: Annotated[
        list[str],
        typer.Option("--metadata", "-m", metavar="KEY=VALUE", help="Metadata, repeatable"),
    ] = [],  # noqa: B006
    uri: Annotated[str | None, typer.Option(help="data_arrived: object uri")] = None,
    rows: Annotated[int | None, typer.Option(help="data_arrived: row count")] = None,
    size_bytes: Annotated[int | None, typer.Option(help="data_arrived: size")] = None,
    score: Annotated[float | None, typer.Option(help="drift: score")] = None,
    severity: Annotated[Severity | None, typer.Option(help="drift, performance: severity")] = None,
    feature: Annotated[
        list[str],
        typer.Option("--feature", metavar="NAME", help="drift: drifted feature, repeatable"),
    ] = [],  # noqa: B006
    endpoint: Annotated[str | None, typer.Option(help="drift: affected endpoint")] = None,
    window_start: Annotated[
        datetime | None, typer.Option(help="drift: anomaly window start (UTC)")
    ] = None,
    window_end: Annotated[
        datetime | None, typer.Option(help="drift: anomaly window end (UTC)")
    ] = None,
    metric: Annotated[str | None, typer.Option(help="performance: the degraded metric")] = None,
    reference: Annotated[
        float | None, typer.Option(help="performance: its reference value")
    ] = None,
    current: Annotated[float | None, typer.Option(help="performance: its current value")] = None,
    change_at: Annotated[
        datetime | None,
        typer.Option(help="drift, performance: when the change began (the new regime)"),
    ] = None,
    alarm_name: Annotated[str | None, typer.Option(help="alarm: name")] = None,
    alarm_state: Annotated[AlarmState, typer.Option(help="alarm: state")] = AlarmState.ALARM,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the decision (update) or just signal")
    ] = True,
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
            "change_at": change_at.astimezone() if change_at else None,
        }
    elif kind is TriggerKind.PERFORMANCE:
        fields["performance"] = {
            "severity": severity,
            "metric": metric,
            "reference": reference,
            "current": current,
            "endpoint": endpoint,
            "change_at": change_at.astimezone() if change_at else None,
        }
    elif kind is TriggerKind.ALARM:
        fields["alarm"] = {"name": alarm_name, "state": alarm_state}
    try:
        event = TriggerEvent.model_validate(fields)
    except ValidationError as err:
        raise fail_validation(err, "invalid trigger") from None

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

    run(send, connection(ctx))


# ---------------------------------------------------------------- status and control


def status(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Argument(help="Model (omit to list all coordinators)")
    ] = None,
    decisions: Annotated[
        int, typer.Option(help="How many recent decisions to show (older ones: the archive)")
    ] = 15,
    before_seq: Annotated[
        int | None, typer.Option(help="Only decisions before this sequence number", min=1)
    ] = None,
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
        recent = await coordinators.decisions(
            model, limit=decisions, before_seq=before_seq, archive=DecisionStore(retrain_home())
        )
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

    run(show, connection(ctx))


def pause(
    ctx: typer.Context,
    model: RegisteredModelArgument,
    reason: Annotated[str, typer.Option(help="Why (shown in status and decisions)")] = "",
    by: Annotated[str, typer.Option(help="Who")] = getpass.getuser(),
) -> None:
    """Pause a coordinator: triggers are suppressed, pending work waits until resume."""

    async def act(client: Client) -> None:
        state = await Coordinators(client).pause(model, reason=reason, by=by)
        console.print(render.status_table(state))

    run(act, connection(ctx))


def resume(
    ctx: typer.Context,
    model: ModelArgument,
    by: Annotated[str, typer.Option(help="Who")] = getpass.getuser(),
) -> None:
    """Resume a paused coordinator; work that became due meanwhile is evaluated now."""

    async def act(client: Client) -> None:
        state = await Coordinators(client).resume(model, by=by)
        console.print(render.status_table(state))

    run(act, connection(ctx))


# ---------------------------------------------------------------- policy


@policy_app.command("show")
def policy_show(ctx: typer.Context, model: ModelArgument, as_json: JsonOption = False) -> None:
    """Print the policy the coordinator applies now."""

    async def show(client: Client) -> None:
        state = await Coordinators(client).status(model)
        if as_json:
            print_json(state.policy.model_dump(mode="json"))
        else:
            console.print(render.policy_table(state.policy))
            console.print(f"policy version {state.policy_version}")

    run(show, connection(ctx))


@policy_app.command("set")
def policy_set(
    ctx: typer.Context,
    model: RegisteredModelArgument,
    changes: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FIELD=VALUE...",
            help="FIELD=VALUE pairs, e.g. cooldown=2h batch_size=50 cost.hourly_rate=3.5",
        ),
    ] = None,
    file: Annotated[Path | None, typer.Option(help="JSON file with fields to change")] = None,
) -> None:
    """Change policy fields (validated; the rest stay as they are)."""
    patch: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = loads_bounded(file.read_bytes(), str(file))
        except OSError as err:
            raise fail(f"cannot read {file}: {err.strerror}", code=2) from None
        except ValueError as err:
            raise fail(str(err), code=2) from None
        if not isinstance(loaded, dict):
            raise fail(f"{file} must hold a JSON object", code=2)
        patch.update(loaded)
    for pair in changes or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"expected FIELD=VALUE, got {pair!r}", code=2)
        _set_path(patch, key.split("."), _parse_value(value, key[:100]))
    if not patch:
        raise fail("nothing to change: give FIELD=VALUE pairs or --file", code=2)
    try:
        TriggerPolicy.check_changes(patch)
    except ValueError as err:
        raise fail(str(err), code=2) from None

    async def act(client: Client) -> None:
        coordinators = Coordinators(client)
        state = await coordinators.set_policy(model, patch)
        console.print(render.policy_table(state.policy))
        console.print(f"policy version {state.policy_version}")

    run(act, connection(ctx))


def _parse_value(text: str, what: str) -> Any:
    """JSON (numbers, true, objects), else the text itself (durations "2h", time zones,
    currencies); JSON we refuse (5,000 digits, nested too deeply) is an error, not a traceback."""
    try:
        return loads_bounded(text.encode("utf-8", "surrogatepass"), what)
    except ValueError as err:
        if str(err).startswith(f"{what}: not valid JSON") and "digits" not in str(err):
            return text
        raise fail(str(err), code=2) from None


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise fail(f"cannot set {'.'.join(path)}: {key} is not an object", code=2)
    target[path[-1]] = value
