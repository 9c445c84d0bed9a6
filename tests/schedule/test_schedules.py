"""Scheduled triggers on the dev server (the time-skipping server has no Schedules): a model's
schedule delivers `scheduled` triggers to its coordinator, is managed in place, backfills
deduplicate, and skipped runs and stale data alert."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from typer.testing import CliRunner, Result

from activities.specs import SpecStore
from starters.api.coordinators import CoordinatorNotFound, Coordinators
from starters.api.schedules import Schedules
from tests.conftest import binary
from tests.support.helpers import eventually, restartable_port
from tests.support.schedule_harness import (
    MetricLog,
    completed_reports,
    deleted_after,
    metered_client,
    outbox,
    schedule_worker,
)
from tests.support.webhook import WebhookReceiver, with_webhook
from workers.sandbox import workflow_runner
from workers.search_attributes import dev_server_flags
from workflows.common import metrics, names
from workflows.coordinator.models import Decision, Reason
from workflows.coordinator.triggers import TriggerKind
from workflows.schedule.models import OverlapPolicy, ScheduledRunReport
from workflows.schedule.rules import partition_end, scheduled_event_id
from workflows.schedule.workflow import ScheduledTrigger
from workflows.spec.models import DataSources, Feature, ModelSpec

pytestmark = pytest.mark.dev_server_only

# Never due during a test: runs come from `trigger` and `backfill` only.
NEVER_SOON = "0 0 29 2 *"


async def scheduled_decisions(client: Client, task_queue: str, model: str) -> list[Decision]:
    decisions = await Coordinators(client, task_queue, models=None).decisions(model, limit=200)
    return [d for d in decisions if TriggerKind.SCHEDULED in d.kinds]


async def test_interval_schedule_delivers_scheduled_triggers(
    client: Client, task_queue: str, model: str, home: Path
) -> None:
    schedules = Schedules(client, task_queue)
    async with deleted_after(schedules, model), schedule_worker(client, home, task_queue):
        # allow-all: a run slowed down by a busy machine never makes the next one skip.
        outcome = await schedules.set(model, every="1s", priority=2, overlap="allow-all")
        assert outcome.created
        assert outcome.schedule.settings is not None
        assert outcome.schedule.overlap is OverlapPolicy.ALLOW_ALL

        async def two_reports() -> list[ScheduledRunReport] | None:
            reports = await completed_reports(client, model)
            return reports if len(reports) >= 2 else None

        reports = await eventually(two_reports, timeout=30, what="two scheduled runs")
        decided = await scheduled_decisions(client, task_queue, model)
    first = reports[0]
    assert first.event_id == scheduled_event_id(model, first.scheduled_at)
    assert first.decision is not None and first.decision.event_ids == [first.event_id]
    assert first.decision.kinds == [TriggerKind.SCHEDULED]
    assert first.schedule_id == names.schedule_id(model)
    # No spec registered: delivered all the same, freshness unknown.
    assert first.stale is None and "no registered spec" in first.freshness_note
    assert first.alerts == []
    assert {r.event_id for r in reports} <= {i for d in decided for i in d.event_ids}
    assert {d.priority for d in decided if d.priority is not None} == {2}


async def test_set_again_updates_in_place_and_keeps_the_pause(
    client: Client, task_queue: str, model: str
) -> None:
    schedules = Schedules(client, task_queue)
    async with deleted_after(schedules, model):
        first = await schedules.set(model, cron=[NEVER_SOON], tz="Europe/Paris", note="nightly")
        assert first.created and first.schedule.note == "nightly"
        paused = await schedules.pause(model, note="feature store migration")
        assert paused.paused and paused.note == "feature store migration"

        second = await schedules.set(
            model,
            cron=["0 4 * * *", "30 16 * * FRI"],
            overlap="buffer-one",
            catchup_window="10m",
            stale_after="2d",
            priority=1,
        )
        assert not second.created
        view = second.schedule
        assert view.paused and view.note == "feature store migration"
        assert view.settings is not None
        assert view.settings.cron == ["0 4 * * *", "30 16 * * fri"]
        assert view.settings.timezone == "UTC"
        assert view.settings.stale_after == timedelta(days=2)
        assert view.settings.priority == 1
        assert view.overlap is OverlapPolicy.BUFFER_ONE
        assert view.catchup_window == timedelta(minutes=10)

        async def listed_once() -> bool:
            return [v.model for v in await schedules.list()].count(model) == 1

        await eventually(listed_once, timeout=15, what="the schedule in the listing")
        unpaused = await schedules.unpause(model)
        assert not unpaused.paused
        assert unpaused.next_runs and unpaused.next_runs[0].minute in (0, 30)

        await schedules.delete(model)
        with pytest.raises(LookupError, match="has no schedule"):
            await schedules.describe(model)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"cron": ["0 3 * *"]}, "has 4 fields"),
        ({"cron": ["0 25 * * *"]}, "hour: 25 is outside 0-23"),
        ({"cron": ["0 3 * * *"], "tz": "Mars/Olympus_Mons"}, "unknown time zone"),
        ({"every": "3 fortnights"}, "every"),
        ({"every": "1h", "stale_after": "soon"}, "stale_after"),
        ({"every": "1h", "cron": ["0 3 * * *"]}, "either cron expressions or an interval"),
        ({}, "either cron expressions or an interval"),
        ({"every": "10m", "jitter": "10m"}, "jitter must be shorter"),
        ({"every": "1h", "priority": 9}, "priority"),
        ({"every": "1h", "overlap": "sometimes"}, "overlap"),
    ],
)
async def test_bad_settings_are_refused_and_nothing_is_created(
    client: Client, task_queue: str, model: str, fields: dict[str, Any], error: str
) -> None:
    schedules = Schedules(client, task_queue)
    with pytest.raises(ValueError, match=error):
        await schedules.set(model, **fields)
    with pytest.raises(ValueError, match="invalid model name"):
        await schedules.set("Not A Model!", every="1h")
    with pytest.raises(LookupError):
        await schedules.describe(model)


async def test_trigger_runs_now_and_describe_shows_the_report(
    client: Client, task_queue: str, model: str, home: Path
) -> None:
    schedules = Schedules(client, task_queue)
    async with deleted_after(schedules, model), schedule_worker(client, home, task_queue):
        await schedules.set(model, cron=[NEVER_SOON])
        await schedules.pause(model, note="a paused schedule still runs when asked")
        await schedules.trigger(model)
        [report] = await eventually(
            lambda: completed_reports(client, model), timeout=20, what="the triggered run"
        )
        view = await schedules.describe(model)
    assert report.decision is not None and report.decision.kinds == [TriggerKind.SCHEDULED]
    assert report.skipped_new == 0 and report.missed_new == 0
    assert report.counted_since.startswith("the schedule's creation")
    assert view.last_report == report
    assert view.recent_runs[0].status == "completed"
    assert view.recent_runs[0].decision == (
        f"{report.decision.action.value}: {report.decision.reason.value}"
    )
    # The run replays from its history: nothing in it depends on the clock or I/O.
    history = await client.get_workflow_handle(report.workflow_id).fetch_history()
    replayer = Replayer(
        workflows=[ScheduledTrigger],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)


async def test_backfill_delivers_each_time_once_and_a_repeat_is_deduplicated(
    client: Client, task_queue: str, model: str, home: Path
) -> None:
    today = datetime.now(UTC).date()
    start = datetime.combine(today - timedelta(days=4), time(12), UTC)
    end = datetime.combine(today - timedelta(days=1), time(12), UTC)
    expected = {
        scheduled_event_id(model, datetime.combine(today - timedelta(days=d), time(3), UTC))
        for d in (3, 2, 1)
    }
    schedules = Schedules(client, task_queue)
    coordinators = Coordinators(client, task_queue, models=None)
    async with deleted_after(schedules, model), schedule_worker(client, home, task_queue):
        await schedules.set(model, cron=["0 3 * * *"])
        await schedules.pause(model, note="backfills run while paused")
        await schedules.backfill(model, start, end)

        async def decided(reason: Reason | None) -> set[str] | None:
            try:
                decisions = await coordinators.decisions(model, limit=200)
            except CoordinatorNotFound:  # the first run has not started the coordinator yet
                return None
            ids = {
                event_id
                for d in decisions
                if TriggerKind.SCHEDULED in d.kinds and (reason is None or d.reason is reason)
                for event_id in d.event_ids
            }
            return ids if ids >= expected else None

        first = await eventually(lambda: decided(None), timeout=30, what="three backfilled times")
        assert first == expected

        async def finished() -> bool:
            return len(await completed_reports(client, model)) == len(expected)

        # A run still going keeps its workflow id: Temporal would not start the repeat at all.
        await eventually(finished, timeout=30, what="the backfilled runs to finish")
        await schedules.backfill(model, start, end)
        repeats = await eventually(
            lambda: decided(Reason.DUPLICATE_EVENT), timeout=30, what="the repeats ignored"
        )
        assert repeats == expected
        loops = (await coordinators.status(model)).loops_started
    # Three times, one coordinator decision each: at most one loop, whatever the repeats.
    assert loops == 1


@pytest.mark.slow
async def test_runs_skipped_by_the_overlap_policy_alert_and_count(
    client: Client, task_queue: str, model: str, home: Path
) -> None:
    metered = await metered_client(client)
    schedules = Schedules(client, task_queue)
    async with deleted_after(schedules, model):
        await schedules.set(model, every="1s", overlap="skip")

        # No worker polls yet: the first run cannot finish, so the next ones are skipped.
        async def skipped() -> int:
            return (await schedules.describe(model, runs=0)).skipped_total >= 2

        await eventually(skipped, timeout=20, what="runs skipped by the overlap policy")
        async with schedule_worker(metered, home, task_queue):

            async def alerted() -> list[ScheduledRunReport]:
                return [r for r in await completed_reports(client, model) if r.skipped_new]

            [report, *_] = await eventually(alerted, timeout=30, what="the skipped-runs alert")
            await eventually(
                lambda: _async(MetricLog.total(metrics.SCHEDULE_SKIPPED.name, model)),
                timeout=10,
                what="the skipped-runs counter",
            )
    assert report.skipped_new >= 2 and report.overlap is OverlapPolicy.SKIP
    assert report.decision is not None  # the late run still delivered its trigger
    alert = outbox(home)[report.alerts[0]]
    assert alert["level"] == "warning"
    assert f"{report.skipped_new} skipped" in alert["subject"]
    assert "skipped by the overlap policy 'skip'" in alert["body"]
    assert f"({report.skipped_total} in total)" in alert["body"]
    assert MetricLog.total(metrics.SCHEDULE_SKIPPED.name, model) >= report.skipped_new
    assert MetricLog.total(metrics.SCHEDULE_MISSED.name, model) == 0


async def _async(value: float) -> float:
    return value


def write_partition(home: Path, day: date) -> None:
    directory = home / "data" / "labelled" / f"date={day.isoformat()}"
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": [1.0, 2.0], "y": [0, 1]}), directory / "part-0.parquet")


async def test_stale_data_alert_once_until_new_data_arrive(
    client: Client, task_queue: str, model: str, home: Path, webhook: WebhookReceiver
) -> None:
    spec = with_webhook(
        ModelSpec(
            name=model,
            features=[Feature(name="x")],
            label="y",
            data=DataSources(
                labelled="data/labelled",
                baseline_holdout="data/baseline.parquet",
                golden_set="data/golden.parquet",
            ),
        )
    )
    SpecStore(home).register(spec)
    old = datetime.now(UTC).date() - timedelta(days=5)
    write_partition(home, old - timedelta(days=1))
    write_partition(home, old)
    metered = await metered_client(client)
    schedules = Schedules(client, task_queue)

    async def run_once(count: int) -> ScheduledRunReport:
        await schedules.trigger(model)

        async def done() -> list[ScheduledRunReport] | None:
            reports = await completed_reports(client, model)
            return reports if len(reports) == count else None

        return (await eventually(done, timeout=20, what=f"run {count}"))[-1]

    async with deleted_after(schedules, model), schedule_worker(metered, home, task_queue):
        await schedules.set(model, cron=[NEVER_SOON], stale_after="2d")
        first = await run_once(1)
        second = await run_once(2)
        write_partition(home, datetime.now(UTC).date())
        third = await run_once(3)

    assert first.stale is True and first.newest_partition == old
    assert first.newest_data_at == partition_end(old)
    assert first.alerts == [f"data-stale-{model}-{old.isoformat()}"]
    alert = outbox(home)[first.alerts[0]]
    assert f"date={old.isoformat()}" in alert["body"] and "allows 2d" in alert["body"]
    # The spec's webhook got the same alert.
    assert await webhook.wait_for(1) == [alert["subject"]]
    # Still stale, same partition: told once.
    assert second.stale is True and second.alerts == []
    assert third.stale is False and third.alerts == []
    gauges = [u.value for u in MetricLog.updates(metrics.DATA_STALE.name, model)]
    assert gauges == [1.0, 1.0, 0.0]
    newest = MetricLog.last(metrics.DATA_NEWEST.name, model)
    assert newest == partition_end(datetime.now(UTC).date()).timestamp()


async def test_cli_sets_lists_pauses_triggers_and_deletes(
    client: Client, model: str, tmp_path: Path
) -> None:
    from starters.cli.app import app

    target = client.service_client.config.target_host
    # `schedule set` refuses models nobody registered: register this one in the CLI's home.
    spec = ModelSpec(
        name=model,
        features=[Feature(name="x")],
        label="y",
        data=DataSources(
            labelled="data/labelled",
            baseline_holdout="data/baseline.parquet",
            golden_set="data/golden.parquet",
        ),
    )
    SpecStore(tmp_path).register(spec)

    async def retrain(*args: str) -> Result:
        # In a thread: the command runs its own event loop, as it does from a shell.
        def invoke() -> Result:
            return CliRunner().invoke(
                app, ["--address", target, *args], env={"RETRAIN_HOME": str(tmp_path)}
            )

        return await asyncio.to_thread(invoke)

    def data(result: Result) -> Any:
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    schedules = Schedules(client)
    async with deleted_after(schedules, model):
        created = data(
            await retrain(
                "schedule", "set", model, "--cron", "0 3 * * *", "--tz", "Europe/Paris",
                "--stale-after", "2d", "--note", "nightly", "--json",
            )
        )  # fmt: skip
        assert created["created"] and created["schedule"]["overlap"] == "skip"
        assert created["schedule"]["settings"]["timezone"] == "Europe/Paris"
        updated = await retrain(
            "schedule", "set", model, "--every", "6h", "--overlap", "buffer-all"
        )
        assert updated.exit_code == 0 and "updated" in updated.stdout
        paused = data(await retrain("schedule", "pause", model, "--note", "migration", "--json"))
        assert paused["paused"] and paused["note"] == "migration"
        assert paused["settings"]["every"] == "PT6H" and paused["overlap"] == "buffer-all"

        async def listed() -> dict[str, Any] | None:
            rows = data(await retrain("schedule", "list", "--json"))
            return next((row for row in rows if row["model"] == model), None)

        row = await eventually(listed, timeout=15, what="the schedule in `schedule list`")
        assert row["schedule_id"] == f"schedule-{model}"
        assert (await retrain("schedule", "list")).exit_code == 0
        assert (await retrain("schedule", "unpause", model)).exit_code == 0
        described = data(await retrain("schedule", "describe", model, "--json"))
        assert not described["paused"] and described["next_runs"]
        triggered = await retrain("schedule", "trigger", model, "--overlap", "allow-all")
        assert triggered.exit_code == 0 and "triggered" in triggered.stdout
        day = datetime.now(UTC).date() - timedelta(days=2)
        backfilled = await retrain(
            "schedule", "backfill", model, "--start", f"{day}", "--end", f"{day}T12:00:00"
        )
        assert backfilled.exit_code == 0, backfilled.output

        refused = {
            "has 4 fields": ("set", model, "--cron", "0 3 * *"),
            "unknown time zone": ("set", model, "--cron", "0 3 * * *", "--tz", "Mars/Base"),
            "every": ("set", model, "--every", "3 fortnights"),
            "priority": ("set", model, "--every", "1h", "--priority", "9"),
            "invalid model name": ("set", "Not-A-Model!", "--every", "1h"),
            "'sometimes' is not one of": ("set", model, "--every", "1h", "--overlap", "sometimes"),
            "is in the future": ("backfill", model, "--start", "2026-01-01", "--end", "2999-01-01"),
        }
        for message, args in refused.items():
            result = await retrain("schedule", *args)
            assert result.exit_code == 2, (args, result.output)
            assert message in result.output, (args, result.output)
        # Refused means untouched: still the 6-hour interval.
        after = data(await retrain("schedule", "describe", model, "--json"))
        assert after["settings"]["every"] == "PT6H"

        assert (await retrain("schedule", "delete", model)).exit_code == 0
        gone = await retrain("schedule", "describe", model)
        assert gone.exit_code == 1 and "has no schedule" in gone.output


@pytest.mark.slow
async def test_runs_missed_while_the_server_was_down_alert_and_count(
    tmp_path: Path, task_queue: str, model: str, home: Path
) -> None:
    """A server of the test's own, on a database file that outlives it: stopped for longer
    than the catch-up window, it counts the runs due meanwhile as missed when it is back."""
    database, port = tmp_path / "temporal.db", restartable_port()

    async def start_server() -> WorkflowEnvironment:
        return await WorkflowEnvironment.start_local(
            dev_server_existing_path=binary("temporal"),
            data_converter=pydantic_data_converter,
            port=port,
            dev_server_extra_args=[*dev_server_flags(), "--db-filename", str(database)],
        )

    server = await start_server()
    try:
        await Schedules(server.client, task_queue).set(
            model, every="2s", catchup_window="10s", overlap="allow-all"
        )
        async with schedule_worker(await metered_client(server.client), home, task_queue):
            await eventually(
                lambda: completed_reports(server.client, model), timeout=20, what="a first run"
            )
    finally:
        await server.shutdown()
    await asyncio.sleep(16)  # past the 10 s catch-up window: the runs due meanwhile are lost

    server = await start_server()
    try:
        async with schedule_worker(await metered_client(server.client), home, task_queue):

            async def alerted() -> list[ScheduledRunReport]:
                return [r for r in await completed_reports(server.client, model) if r.missed_new]

            [report, *_] = await eventually(alerted, timeout=30, what="the missed-runs alert")
        await Schedules(server.client, task_queue).delete(model)
    finally:
        await server.shutdown()
    assert report.missed_new >= 2
    assert report.missed_total is not None and report.missed_total >= report.missed_new
    assert report.decision is not None
    alert = outbox(home)[report.alerts[0]]
    assert alert["level"] == "warning"
    assert f"{report.missed_new} missed" in alert["subject"], alert["subject"]
    assert MetricLog.total(metrics.SCHEDULE_MISSED.name, model) >= report.missed_new
