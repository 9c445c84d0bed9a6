"""ModelCoordinator end to end, on the time-skipping server and on the dev server."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.specs import SpecStore
from starters.demo.synthetic import synthetic_spec
from tests.support.helpers import FAST_POLICY, CoordinatorProbe, eventually
from tests.support.loop_doubles import ControlledLoop, FinishLoop
from tests.support.webhook import with_webhook
from workflows.common import names
from workflows.coordinator.models import Action, Reason
from workflows.coordinator.triggers import (
    AlarmSignal,
    DataArrival,
    DriftSignal,
    TriggerEvent,
    TriggerKind,
)
from workflows.coordinator.workflow import ModelCoordinator
from workflows.loop.models import LoopStatus


@pytest.fixture
def probe(client: Client, task_queue: str, model: str) -> CoordinatorProbe:
    return CoordinatorProbe(client, task_queue, model)


def manual(event_id: str, priority: int = 3) -> TriggerEvent:
    return TriggerEvent(
        kind=TriggerKind.MANUAL, source="test", event_id=event_id, priority=priority
    )


def data(event_id: str, uri: str, rows: int = 100) -> TriggerEvent:
    return TriggerEvent(
        kind=TriggerKind.DATA_ARRIVED,
        source="test",
        event_id=event_id,
        data=DataArrival(uri=uri, rows=rows),
    )


async def finish(
    client: Client, loop_id: str, status: LoopStatus, cost: float | None = None
) -> None:
    """End a ControlledLoop; the coordinator starts it just after deciding, so wait for it."""

    async def signalled() -> bool:
        try:
            await client.get_workflow_handle(loop_id).signal(
                ControlledLoop.finish, FinishLoop(status=status, actual_cost=cost)
            )
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    await eventually(signalled, what=f"{loop_id} to accept finish")


async def test_manual_trigger_starts_a_loop_with_its_context(probe, new_worker, client, model):
    async with new_worker(ControlledLoop):
        await probe.start()
        decision = await probe.submit(manual("m1", priority=2))
        assert (decision.action, decision.reason) == (Action.START, Reason.ELIGIBLE)
        assert decision.loop_id == names.retraining_loop_id(model, 1)

        loop_input = await probe.started_loop(decision.loop_id)
        assert loop_input.model == model
        assert loop_input.coordinator_id == names.coordinator_id(model)
        assert [e.event_id for e in loop_input.trigger.events] == ["m1"]
        assert loop_input.trigger.priority == 2
        assert loop_input.estimated_cost == FAST_POLICY.cost.estimate(0)

        loop = await client.get_workflow_handle(decision.loop_id).describe()
        assert loop.typed_search_attributes.get(names.MODEL_NAME) == model
        assert loop.typed_search_attributes.get(names.TRIGGER_KIND) == ["manual"]
        coordinator = await probe.handle.describe()
        assert coordinator.typed_search_attributes.get(names.ACTIVE_LOOP) == decision.loop_id
        assert coordinator.typed_search_attributes.get(names.RETRAIN_PAUSED) is False


async def test_signal_and_update_are_one_way_in(probe, new_worker):
    async with new_worker(ControlledLoop):
        await probe.start()
        await probe.handle.signal(ModelCoordinator.trigger, manual("same").model_dump(mode="json"))
        await probe.wait_status(lambda s: s.loops_started == 1, "signalled start")
        again = await probe.submit(manual("same"))
        assert (again.action, again.reason) == (Action.IGNORE, Reason.DUPLICATE_EVENT)
        assert (await probe.status()).events_accepted == 1


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"kind": "retrain-now"}, "kind"),
        ({"kind": "manual", "priority": 9}, "priority"),
        ({"kind": "drift", "drift": {"score": -1}}, "drift.score"),
        ({"kind": "drift", "drift": {"score": math.nan}}, "drift.score"),
        ({"kind": "manual", "metadata": {"blob": "x" * 9000}}, "metadata"),
        ({"kind": "data_arrived"}, "data"),
        ({"kind": "manual", "surprise": 1}, "surprise"),
        ("not an object", "JSON object"),
        ([1, 2], "JSON object"),
    ],
)
async def test_malformed_signal_is_recorded_and_changes_nothing(
    probe, new_worker, payload, expected
):
    async with new_worker(ControlledLoop):
        await probe.start()
        before = await probe.status()
        await probe.handle.signal("trigger", payload)

        async def ignored():
            decisions = await probe.decisions()
            return decisions[-1] if decisions else None

        decision = await eventually(ignored, what="the ignore decision")
        assert (decision.action, decision.reason) == (Action.IGNORE, Reason.INVALID_TRIGGER)
        assert expected in (decision.error or "")
        after = await probe.status()
        unchanged = {"recent_decisions", "events_received"}
        assert after.model_dump(exclude=unchanged) == before.model_dump(exclude=unchanged)
        assert after.events_received == before.events_received + 1
        assert await probe.task_failures() == 0


async def test_signal_with_wrong_argument_count_is_recorded(probe, new_worker):
    async with new_worker(ControlledLoop):
        await probe.start()
        await probe.handle.signal("trigger", args=[{"kind": "manual"}, {"kind": "manual"}])
        decision = await eventually(lambda: _last_decision(probe), what="ignore")
        assert decision.reason is Reason.INVALID_TRIGGER
        assert "2 arguments" in (decision.error or "")
        assert await probe.task_failures() == 0


async def _last_decision(probe: CoordinatorProbe):
    decisions = await probe.decisions()
    return decisions[-1] if decisions else None


async def test_invalid_update_is_rejected_before_history(probe, new_worker):
    async with new_worker(ControlledLoop):
        await probe.start()
        events_before = len((await probe.handle.fetch_history()).events)
        with pytest.raises(WorkflowUpdateFailedError) as failure:
            await probe.handle.execute_update(
                "submit_trigger", {"kind": "manual", "priority": 0}, result_type=dict
            )
        assert "priority" in str(failure.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as failure:
            await probe.handle.execute_update("set_policy", {"batch_size": 0}, result_type=dict)
        assert "batch_size" in str(failure.value.cause)
        history = await probe.handle.fetch_history()
        # Rejected updates leave no trace; at most the workflow task that ran the validator.
        kinds = {e.event_type for e in history.events[events_before:]}
        assert not any("UPDATE" in str(k) for k in kinds)
        assert (await probe.status()).events_accepted == 0


async def test_cooldown_defers_then_starts_when_it_ends(probe, new_worker, client):
    async with new_worker(ControlledLoop):
        await probe.start()
        first = await probe.submit(manual("a"))
        assert first.loop_id
        await finish(client, first.loop_id, LoopStatus.PROMOTED)
        await probe.wait_status(lambda s: s.active_loop is None, "first loop closed")
        deferred = await probe.submit(manual("b"))
        assert (deferred.action, deferred.reason) == (Action.DEFER, Reason.COOLDOWN)
        assert deferred.numbers["cooldown_remaining_s"] is not None
        status = await probe.wait_status(lambda s: s.loops_started == 2, "deferred start", 20)
        assert status.last_outcome is not None
        assert status.last_outcome.status is LoopStatus.PROMOTED
        started = [d for d in await probe.decisions() if d.action is Action.START]
        assert started[-1].origin == "deferred"
        assert started[-1].event_ids == ["b"]


async def test_data_batch_fires_when_its_window_expires(probe, new_worker):
    async with new_worker(ControlledLoop):
        await probe.start()
        for i in range(3):
            decision = await probe.submit(data(f"d{i}", f"s3://bucket/day={i}/part.parquet"))
            assert decision.action is Action.BUFFER
        assert (await probe.status()).batch is not None
        status = await probe.wait_status(lambda s: s.loops_started == 1, "batch fired", 20)
        assert status.batch is None
        assert status.active_loop is not None
        loop_input = await probe.started_loop(status.active_loop)
        assert loop_input.trigger.origin == "batch_window"
        assert [d.uri for d in loop_input.trigger.data] == [
            f"s3://bucket/day={i}/part.parquet" for i in range(3)
        ]


async def test_running_loop_coalesces_one_follow_up(probe, new_worker, client):
    async with new_worker(ControlledLoop):
        await probe.start(FAST_POLICY.model_copy(update={"cooldown": timedelta(0)}))
        first = await probe.submit(manual("first"))
        assert first.loop_id
        for i in range(FAST_POLICY.batch_size):
            await probe.submit(data(f"late-{i}", f"gs://bucket/late-{i}.csv"))
        urgent = await probe.submit(manual("urgent", priority=1))
        assert (urgent.action, urgent.reason) == (Action.DEFER, Reason.LOOP_ACTIVE)
        assert (await probe.status()).follow_up is not None

        await finish(client, first.loop_id, LoopStatus.REJECTED_BY_GATE, cost=0.25)
        status = await probe.wait_status(lambda s: s.loops_started == 2, "follow-up start")
        assert status.last_outcome is not None
        assert status.last_outcome.status is LoopStatus.REJECTED_BY_GATE
        assert status.spent_today == pytest.approx(0.25 + FAST_POLICY.cost.estimate(500))
        assert status.active_loop is not None
        follow_up = await probe.started_loop(status.active_loop)
        assert follow_up.trigger.origin == "follow_up"
        assert follow_up.trigger.priority == 1
        assert len(follow_up.trigger.data) == FAST_POLICY.batch_size
        assert {e.event_id for e in follow_up.trigger.events} == {
            "urgent",
            *(f"late-{i}" for i in range(FAST_POLICY.batch_size)),
        }


# The time-skipping server does not tell a parent that its child was terminated.
@pytest.mark.dev_server_only
async def test_failed_loop_is_recorded(probe, new_worker, client):
    async with new_worker(ControlledLoop):
        await probe.start()
        decision = await probe.submit(manual("x"))
        assert decision.loop_id
        await probe.started_loop(decision.loop_id)
        await client.get_workflow_handle(decision.loop_id).terminate(reason="operator")
        status = await probe.wait_status(lambda s: s.last_outcome is not None, "outcome")
        assert status.last_outcome is not None
        assert status.last_outcome.status is LoopStatus.FAILED
        assert "terminated" in status.last_outcome.summary
        assert status.active_loop is None


async def test_drift_severity_routing_and_notifications(probe, new_worker, home, model, webhook):
    # The model's spec names a webhook: the coordinator's alerts reach it as well as the outbox.
    SpecStore(home).register(with_webhook(synthetic_spec(model)))
    async with new_worker(ControlledLoop):
        await probe.start(FAST_POLICY.model_copy(update={"cooldown": timedelta(hours=1)}))

        def drift(event_id: str, score: float, priority: int = 3) -> TriggerEvent:
            return TriggerEvent(
                kind=TriggerKind.DRIFT,
                event_id=event_id,
                priority=priority,
                drift=DriftSignal(score=score, features=["age"], endpoint="prod"),
            )

        low = await probe.submit(drift("low", 0.05))
        assert (low.action, low.reason) == (Action.IGNORE, Reason.DRIFT_LOW)
        high = await probe.submit(drift("high", 0.35, priority=2))
        assert high.action is Action.START and high.requires_approval
        medium = await probe.submit(drift("medium", 0.2))
        assert (medium.action, medium.reason) == (Action.DEFER, Reason.COOLDOWN)
        critical = await probe.submit(drift("critical", 0.9))
        assert (critical.action, critical.reason) == (Action.ESCALATE, Reason.DRIFT_CRITICAL)
        alarm = await probe.submit(
            TriggerEvent(kind=TriggerKind.ALARM, event_id="kpi", alarm=AlarmSignal(name="kpi"))
        )
        assert (alarm.action, alarm.reason) == (Action.SUPPRESS, Reason.HUMAN_REVIEW_PENDING)
        assert (await probe.status()).review_pending
        human = await probe.submit(manual("human", priority=2))
        assert human.requires_approval
        assert not (await probe.status()).review_pending

        outbox = home / "notifications"

        async def delivered():
            return sorted(p.name for p in outbox.glob("*.json")) if outbox.exists() else []

        files = await eventually(lambda: _at_least(delivered, 2), what="notifications")
        assert files == [
            f"{model}-decision-{high.seq}.json",
            f"{model}-decision-{critical.seq}.json",
        ]
        body = json.loads((outbox / files[1]).read_text())
        assert body["level"] == "critical" and "review" in body["subject"]
        assert sorted(await webhook.wait_for(2)) == [
            f"[{model}] critical drift: human review needed",
            f"[{model}] high drift: retraining needs approval",
        ]


async def _at_least(fetch, count: int):
    items = await fetch()
    return items if len(items) >= count else None


async def test_pause_resume_and_policy_changes(probe, new_worker):
    async with new_worker(ControlledLoop):
        await probe.start()
        paused = await probe.handle.execute_update(
            ModelCoordinator.pause, {"reason": "migration", "by": "alice"}
        )
        assert paused.paused and "alice" in (paused.paused_reason or "")
        suppressed = await probe.submit(manual("while-paused"))
        assert (suppressed.action, suppressed.reason) == (Action.SUPPRESS, Reason.PAUSED)
        description = await probe.handle.describe()
        assert description.typed_search_attributes.get(names.RETRAIN_PAUSED) is True

        resumed = await probe.handle.execute_update(ModelCoordinator.resume, {"by": "alice"})
        assert not resumed.paused
        # A suppressed event was not accepted, so it can be sent again after resuming.
        again = await probe.submit(manual("while-paused"))
        assert again.action is Action.START

        changed = await probe.handle.execute_update(
            ModelCoordinator.set_policy, {"cooldown": "30m", "cost": {"hourly_rate": 2.5}}
        )
        assert changed.policy.cooldown == timedelta(minutes=30)
        assert changed.policy.cost.hourly_rate == 2.5
        assert changed.policy.batch_size == FAST_POLICY.batch_size
        assert changed.policy_version == 2
        with pytest.raises(WorkflowUpdateFailedError):
            await probe.handle.execute_update(
                ModelCoordinator.set_policy, {"timezone": "Mars/Olympus"}
            )
        assert (await probe.status()).policy_version == 2


async def test_daily_limit_and_budget(probe, new_worker, client):
    policy = FAST_POLICY.model_copy(
        update={"cooldown": timedelta(0), "max_daily_trainings": 1, "daily_budget": 1.5}
    )
    async with new_worker(ControlledLoop):
        await probe.start(policy)
        first = await probe.submit(manual("one"))
        assert first.loop_id
        limited = await probe.submit(manual("two", priority=3))
        assert (limited.action, limited.reason) == (Action.SUPPRESS, Reason.DAILY_LIMIT)
        over_budget = await probe.submit(manual("three", priority=2))
        assert (over_budget.action, over_budget.reason) == (Action.SUPPRESS, Reason.DAILY_BUDGET)
        assert over_budget.numbers["estimated_cost"] == 1.0
        urgent = await probe.submit(manual("four", priority=1))
        assert (urgent.action, urgent.reason) == (Action.DEFER, Reason.LOOP_ACTIVE)


async def test_current_details_show_the_summary(probe, new_worker, env: WorkflowEnvironment):
    async with new_worker(ControlledLoop):
        await probe.start()
        await probe.submit(data("d0", "s3://b/0"))
        # The UI reads current details through the built-in metadata query.
        metadata = await probe.handle.query("__temporal_workflow_metadata")
        details = metadata.current_details
        assert "pending batch: 1/5 events" in details
        assert "- #1 **buffer** (batch_buffered, 1 event)" in details


async def test_trigger_batch_decides_each_event(probe, new_worker):
    async with new_worker(ControlledLoop):
        await probe.start()
        events: list[object] = [
            data(f"b{i}", f"s3://bucket/b{i}").model_dump(mode="json") for i in range(3)
        ]
        events += [{"kind": "manual", "priority": 11}, "junk", events[0]]
        await probe.handle.signal("trigger_batch", {"events": events})
        await probe.handle.signal("trigger_batch", {"events": []})
        await probe.handle.signal("trigger_batch", [1, 2])

        async def all_recorded():
            decisions = await probe.decisions()
            return decisions if len(decisions) == 8 else None

        decisions = await eventually(all_recorded, what="8 decisions")
        assert [(d.action, d.reason) for d in decisions] == [
            (Action.BUFFER, Reason.BATCH_BUFFERED),
            (Action.BUFFER, Reason.BATCH_BUFFERED),
            (Action.BUFFER, Reason.BATCH_BUFFERED),
            (Action.IGNORE, Reason.INVALID_TRIGGER),
            (Action.IGNORE, Reason.INVALID_TRIGGER),
            (Action.IGNORE, Reason.DUPLICATE_EVENT),
            (Action.IGNORE, Reason.INVALID_TRIGGER),
            (Action.IGNORE, Reason.INVALID_TRIGGER),
        ]
        assert "priority" in (decisions[3].error or "")
        assert "1 to 500 triggers" in (decisions[6].error or "")
        status = await probe.status()
        assert (status.events_received, status.events_accepted) == (8, 3)
        assert await probe.task_failures() == 0
