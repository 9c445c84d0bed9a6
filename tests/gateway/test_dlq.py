"""`retrain dlq list|replay|drop` through typer's CliRunner, against a real store and server.

The commands run `asyncio.run` themselves, so they are invoked in a thread while the test's
event loop keeps the coordinator worker running."""

from __future__ import annotations

import asyncio
import json
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import typer
from temporalio.client import Client
from typer.testing import CliRunner, Result

from starters.cli.app import app as retrain
from starters.gateway import pending
from starters.gateway.database import database_path, now_text, open_database, transaction
from tests.gateway.test_gateway import _decided_ids
from tests.support.gateway_harness import (
    closed_port,
    gateway,
    object_created,
    register_sagemaker_model,
    stored,
    temporal_down,
)
from tests.support.helpers import eventually
from tests.support.loop_doubles import ControlledLoop

runner = CliRunner()


async def invoke(app: typer.Typer, args: list[str], env: dict[str, str]) -> Result:
    return await asyncio.to_thread(lambda: runner.invoke(app, args, env=env))


async def dlq(home: Path, *args: str, address: str | None = None) -> Result:
    """`retrain [--address ADDRESS] dlq ARGS...` (the connection options are the root's)."""
    root = [] if address is None else ["--address", address]
    env = {"RETRAIN_HOME": str(home), "COLUMNS": "200"}
    return await invoke(retrain, [*root, "dlq", *args], env)


def listed(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    found: list[dict[str, Any]] = json.loads(result.stdout)
    return found


REFUSED = "Temporal refused the update (INVALID_ARGUMENT): the batch is too large"


async def _dead_letter(home: Path, events: dict[str, str]) -> None:
    """Post `events` (event id -> bucket) to a gateway whose Temporal is down: those no model
    matches are dead letters at once; the routed ones wait, and are then refused for good as
    the deliverer does when Temporal refuses their update (a transient outage never
    dead-letters anything)."""
    async with gateway(home, temporal_down()) as gw:
        for event_id, bucket in events.items():
            answer = await gw.post("eventbridge", object_created(bucket, "labelled/x", event_id))
            assert answer.status_code == 202
    with closing(open_database(database_path(home))) as conn, transaction(conn):
        pending.bury(conn, pending.take(conn, 1000), REFUSED, 1, now_text())
    waiting, dead = stored(home)
    assert not waiting and len(dead) == len(events)


def target(client: Client) -> str:
    return client.service_client.config.target_host


async def test_list_and_drop(home: Path):
    empty = await dlq(home, "list")
    assert empty.exit_code == 0 and "no dead letters" in empty.stdout
    register_sagemaker_model(home, "churn", "s3://churn-data/labelled")
    await _dead_letter(home, {"routed": "churn-data", "stray-1": "other", "stray-2": "other"})

    everything = listed(await dlq(home, "list", "--json"))
    assert [row["id"] for row in everything] == sorted(row["id"] for row in everything)
    rows = {row["event_id"]: row for row in everything}
    assert set(rows) == {"routed", "stray-1", "stray-2"}
    routed = rows["routed"]
    assert routed["model"] == "churn" and routed["source"] == "eventbridge"
    assert routed["reason"] == REFUSED
    assert routed["event"]["kind"] == "data_arrived" and routed["attempts"] >= 1
    assert rows["stray-1"]["model"] is None and "no registered model" in rows["stray-1"]["reason"]
    assert [
        r["event_id"] for r in listed(await dlq(home, "list", "--json", "--model", "churn"))
    ] == ["routed"]
    assert listed(await dlq(home, "list", "--json", "--source", "sns")) == []
    bad_source = await dlq(home, "list", "--source", "kinesis")
    assert bad_source.exit_code == 2 and "unknown source" in bad_source.output
    table = await dlq(home, "list")
    assert "3 dead letter(s)" in table.stdout and "stray-2" in table.stdout

    unsure = await dlq(home, "drop", "--all")
    assert unsure.exit_code == 2 and "--yes" in unsure.output
    neither = await dlq(home, "drop")
    assert neither.exit_code == 2
    one = await dlq(home, "drop", str(rows["stray-1"]["id"]), "9999")
    assert one.exit_code == 1 and "dropped 1" in one.stdout and "9999" in one.output
    assert {d.event_id for d in stored(home)[1]} == {"routed", "stray-2"}
    dropped = await dlq(home, "drop", "--all", "--yes")
    assert dropped.exit_code == 0 and "dropped 2" in dropped.stdout
    assert stored(home) == ([], [])


@pytest.mark.time_skipping_only
async def test_replay_keeps_failures_and_delivers_once_temporal_is_back(
    home, client, task_queue, new_worker
):
    await _dead_letter(home, {"early": "churn-data", "late": "churn-data"})
    # No spec matched when they arrived: replay routes them again once one is registered.
    failed = await dlq(home, "replay", "--all", address=f"127.0.0.1:{closed_port()}")
    assert failed.exit_code == 1 and "0 delivered, 2 failed" in failed.stdout
    assert all("no registered model" in d.reason for d in stored(home)[1])

    register_sagemaker_model(home, "churn", "s3://churn-data/labelled")
    down = f"127.0.0.1:{closed_port()}"
    still_down = await dlq(home, "replay", "--all", "--attempts", "1", address=down)
    assert still_down.exit_code == 1 and "Temporal unreachable" in still_down.stdout
    kept = stored(home)[1]
    assert all(d.reason.startswith("Temporal unreachable") for d in kept)
    assert all(d.model == "churn" and d.last_failed_at > d.first_failed_at for d in kept)

    missing = await dlq(home, "replay", "12345", address=target(client))
    assert missing.exit_code == 1 and "not in the store: 12345" in missing.output
    both = await dlq(home, "replay", "1", "--all")
    assert both.exit_code == 2

    live = target(client)
    queue = ("--task-queue", task_queue)
    async with new_worker(ControlledLoop):
        first = kept[0].id
        one = await dlq(home, "replay", str(first), *queue, address=live)
        assert one.exit_code == 0 and "1 delivered, 0 failed" in one.stdout
        rest = await dlq(home, "replay", "--all", *queue, "--json", address=live)
        assert json.loads(rest.stdout) == {"delivered": [kept[1].id], "failed": [], "missing": []}
        assert stored(home) == ([], [])
        again = await dlq(home, "replay", "--all", *queue, address=live)
        assert again.exit_code == 0 and "replayed 0" in again.stdout

        async def decided() -> bool:
            return {"early", "late"} <= await _decided_ids(client, task_queue, "churn")

        await eventually(decided, what="the replayed events to be decided")


async def test_the_commands_are_registered_and_the_gateway_refuses_bad_secrets(home: Path):
    env = {"RETRAIN_HOME": str(home), "RETRAIN_GATEWAY_TOKEN_KINESIS": "x"}
    for args in (["gateway", "--help"], ["dlq", "--help"], ["dlq", "replay", "--help"]):
        shown = await invoke(retrain, args, env)
        assert shown.exit_code == 0, shown.output
    started = await invoke(retrain, ["gateway"], env)
    assert started.exit_code == 2 and "unknown source 'kinesis'" in started.output
