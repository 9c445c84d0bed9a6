"""Every signal, update and query handler of every workflow under fuzzed payloads, sent as a
plain client would (the default JSON encoding, raw bytes the SDK cannot parse, binary, null, no
argument, two): each is refused with a clear reason (an update's validator error, an ignored
signal recorded with its reason), the execution's state does not change, and no workflow task
ever fails.

The workflows run on a worker without activities: each stays at its first step, its handlers
live, nothing it decides is carried out. Hypothesis draws the payloads (bounded: a few dozen
examples per handler, `FUZZ_EXAMPLES`); the counts are printed at the end of each test.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import RawValue
from temporalio.worker import Worker

from tests.fuzz.strategies import (
    COMMAND_NEAR,
    PAUSE_NEAR,
    POLICY_NEAR,
    REVIEW_NEAR,
    TRIGGER_NEAR,
    arguments,
    describe,
)
from tests.support.helpers import eventually
from workers.converter import with_worker_converter
from workers.sandbox import workflow_runner
from workflows.common import names
from workflows.common.messages import batch_items, decode_raw, one_message
from workflows.coordinator.models import CoordinatorInput, PauseRequest
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.triggers import MAX_EVENTS_PER_BATCH, parse_observation, parse_trigger
from workflows.coordinator.workflow import ModelCoordinator
from workflows.drift.models import CheckRequest, DriftMonitorInput
from workflows.drift.workflow import DriftMonitor
from workflows.loop.models import (
    EventRef,
    RetrainingLoopInput,
    TriggerContext,
)
from workflows.loop.workflow import RetrainingLoop
from workflows.rollout.models import DeploymentPolicy, RolloutCommand, RolloutInput
from workflows.rollout.workflow import StagedRollout
from workflows.slots.models import SetLimit, SlotRelease, SlotRequest, TrainingSlotsInput
from workflows.slots.workflow import TrainingSlots

pytestmark = pytest.mark.dev_server_only

FUZZ_EXAMPLES = 40
COUNTS: Counter[str] = Counter()
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def valid(check: Callable[[], Any]) -> bool:
    try:
        check()
    except ValueError:
        return False
    return True


def decoded(value: Any) -> Any:
    return decode_raw(value, "fuzz") if isinstance(value, RawValue) else value


@dataclass
class Target:
    handle: WorkflowHandle[Any, Any]
    # What must not change when a message is refused (a query's answer, reduced).
    state: Callable[[], Awaitable[Any]]


@pytest_asyncio.fixture
async def targets(client: Client, task_queue: str) -> AsyncIterator[dict[str, Target]]:
    """One execution of each workflow, on a worker without activities."""
    worker = Worker(
        with_worker_converter(client),
        task_queue=task_queue,
        workflows=[ModelCoordinator, RetrainingLoop, StagedRollout, DriftMonitor, TrainingSlots],
        workflow_runner=workflow_runner(),
    )
    tag = uuid.uuid4().hex[:8]
    async with worker:
        coordinator = await client.start_workflow(
            ModelCoordinator.run,
            CoordinatorInput(model=f"fuzz-{tag}"),
            id=f"coordinator-fuzz-{tag}",
            task_queue=task_queue,
        )
        loop = await client.start_workflow(
            RetrainingLoop.run,
            RetrainingLoopInput(
                model=f"fuzz-{tag}",
                loop_number=1,
                coordinator_id=coordinator.id,
                trigger=TriggerContext(
                    events=[
                        EventRef(
                            event_id="e",
                            kind="manual",
                            priority=3,
                            source="fuzz",
                            received_at=datetime.now(UTC),
                        )
                    ],
                    priority=3,
                    kinds=["manual"],
                    origin="direct",
                ),
                estimated_cost=1.0,
                policy_version=1,
            ),
            id=f"retrain-fuzz-{tag}-1",
            task_queue=task_queue,
        )
        rollout = await client.start_workflow(
            StagedRollout.run,
            RolloutInput(
                model=f"fuzz-{tag}",
                loop_id=loop.id,
                rollout_number=1,
                candidate_version="2",
                champion_version="1",
                policy=DeploymentPolicy(),
                capture_dir="captured",
            ),
            id=f"rollout-fuzz-{tag}-1",
            task_queue=task_queue,
        )
        drift = await client.start_workflow(
            DriftMonitor.run,
            DriftMonitorInput(model=f"fuzz-{tag}"),
            id=f"drift-fuzz-{tag}",
            task_queue=task_queue,
        )
        slots = await client.start_workflow(
            TrainingSlots.run,
            TrainingSlotsInput(limit=2),
            id=f"training-slots-fuzz-{tag}",
            task_queue=task_queue,
        )

        async def coordinator_state() -> Any:
            status = await coordinator.query(ModelCoordinator.status)
            return (
                status.policy,
                status.policy_version,
                status.paused,
                status.batch,
                status.loops_started,
                status.events_accepted,
                status.active_loop,
                status.review_pending,
            )

        async def loop_state() -> Any:
            view = await loop.query(RetrainingLoop.status)
            return view.stage, view.awaiting_approval, view.record.approval.review

        async def rollout_state() -> Any:
            view = await rollout.query(StagedRollout.status)
            applied = [c for c in view.commands if c.refused is None]
            return view.step, view.paused, view.held, applied

        async def drift_state() -> Any:
            return (await drift.query(DriftMonitor.status)).model_dump(exclude={"now"})

        async def slots_state() -> Any:
            status = await slots.query(TrainingSlots.status)
            return status.limit, status.holders, status.waiting

        yield {
            "coordinator": Target(coordinator, coordinator_state),
            "loop": Target(loop, loop_state),
            "rollout": Target(rollout, rollout_state),
            "drift": Target(drift, drift_state),
            "slots": Target(slots, slots_state),
        }
        for target in (coordinator, loop, rollout, drift, slots):
            await target.terminate("fuzz over")
        await no_task_failures(client, [coordinator, loop, rollout, drift, slots])
    print(f"\nfuzzed messages: {dict(sorted(COUNTS.items()))}")


async def no_task_failures(client: Client, handles: list[WorkflowHandle[Any, Any]]) -> None:
    from temporalio.api.enums.v1 import EventType

    for handle in handles:
        history = await client.get_workflow_handle(handle.id).fetch_history()
        failed = [
            e.workflow_task_failed_event_attributes.failure.message
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        assert failed == [], f"{handle.id}: workflow task failures {failed}"


async def refused_update(target: Target, name: str, args: tuple[Any, ...]) -> None:
    """The update is refused by its validator with a reason, and nothing changes."""
    before = await target.state()
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await target.handle.execute_update(name, args=list(args), rpc_timeout=timedelta(seconds=30))
    message = getattr(refused.value.cause, "message", "")
    assert message and "Traceback" not in message, (name, describe(args), message)
    assert await target.state() == before, (name, describe(args))
    COUNTS[f"{name} update (refused)"] += 1


async def ignored_signal(
    target: Target, name: str, args: tuple[Any, ...], recorded: Callable[[], Awaitable[Any]]
) -> None:
    """The signal is recorded as ignored (the refusals' record changes: one more, with its
    reason); nothing else changes."""
    before, record = await target.state(), await recorded()
    await target.handle.signal(name, args=list(args))

    async def seen() -> bool:
        return bool(await recorded() != record)

    await eventually(seen, what=f"{name}{describe(args)} recorded as ignored")
    assert await target.state() == before, (name, describe(args))
    COUNTS[f"{name} signal (ignored)"] += 1


# ---------------------------------------------------------------- coordinator


async def ignored_decisions(target: Target) -> Any:
    """Every refused trigger is counted as received and decided `ignore` (invalid_trigger)."""
    status = await target.handle.query(ModelCoordinator.status)
    last = status.recent_decisions[-1] if status.recent_decisions else None
    assert last is None or last.reason.value == "invalid_trigger", last
    assert last is None or last.error, last
    return status.events_received


@FUZZ
@given(args=arguments(TRIGGER_NEAR))
async def test_coordinator_trigger_signal(targets: dict[str, Target], args: tuple[Any, ...]):
    target = targets["coordinator"]
    if len(args) == 1 and valid(lambda: parse_trigger(decoded(args[0]))):
        COUNTS["trigger signal (valid, skipped)"] += 1
        return
    await ignored_signal(target, "trigger", args, lambda: ignored_decisions(target))


@FUZZ
@given(args=arguments(st.lists(TRIGGER_NEAR, min_size=1, max_size=3).map(lambda e: {"events": e})))
async def test_coordinator_trigger_batch_signal(targets: dict[str, Target], args: tuple[Any, ...]):
    target = targets["coordinator"]
    try:
        items = batch_items(tuple(decoded(a) for a in args), "events", MAX_EVENTS_PER_BATCH, "b")
    except ValueError:
        items = None
    if items is not None and any(valid(partial(parse_trigger, item)) for item in items):
        COUNTS["trigger_batch signal (has a valid event, skipped)"] += 1
        return
    await ignored_signal(target, "trigger_batch", args, lambda: ignored_decisions(target))


@FUZZ
@given(args=arguments(st.just({"event": {"kind": "performance"}}), st.just({"labelled": -1})))
async def test_coordinator_performance_observed_signal(
    targets: dict[str, Target], args: tuple[Any, ...]
):
    target = targets["coordinator"]
    if len(args) == 1 and valid(lambda: parse_observation(decoded(args[0]))):
        COUNTS["performance_observed signal (valid, skipped)"] += 1
        return
    await ignored_signal(target, "performance_observed", args, lambda: ignored_decisions(target))


@FUZZ
@given(args=arguments(TRIGGER_NEAR, oversized=True))
async def test_coordinator_submit_trigger_update(targets: dict[str, Target], args: tuple[Any, ...]):
    if len(args) == 1 and valid(lambda: parse_trigger(decoded(args[0]))):
        COUNTS["submit_trigger update (valid, skipped)"] += 1
        return
    await refused_update(targets["coordinator"], "submit_trigger", args)


@FUZZ
@given(args=arguments(st.just({"events": []}), st.just({"events": "x"}), oversized=True))
async def test_coordinator_submit_triggers_update(
    targets: dict[str, Target], args: tuple[Any, ...]
):
    if valid(lambda: batch_items(args, "events", MAX_EVENTS_PER_BATCH, "b")):
        COUNTS["submit_triggers update (a batch: per-event verdicts, skipped)"] += 1
        return
    await refused_update(targets["coordinator"], "submit_triggers", args)


@FUZZ
@given(args=arguments(POLICY_NEAR, oversized=True), name=st.sampled_from(["set_policy"]))
async def test_coordinator_set_policy_update(
    targets: dict[str, Target], args: tuple[Any, ...], name: str
):
    if len(args) == 1 and valid(lambda: TriggerPolicy().with_changes(decoded(args[0]))):
        COUNTS["set_policy update (valid, skipped)"] += 1
        return
    await refused_update(targets["coordinator"], name, args)


@FUZZ
@given(args=arguments(PAUSE_NEAR, oversized=True), name=st.sampled_from(["pause", "resume"]))
async def test_coordinator_pause_resume_updates(
    targets: dict[str, Target], args: tuple[Any, ...], name: str
):
    if valid(lambda: one_message(args, PauseRequest, name)):
        COUNTS[f"{name} update (valid, skipped)"] += 1
        return
    await refused_update(targets["coordinator"], name, args)


@FUZZ
@given(args=arguments(st.just({"limit": 0}), st.just({"before_seq": "1"})))
async def test_coordinator_decisions_query(targets: dict[str, Target], args: tuple[Any, ...]):
    """A query never changes anything: it answers or fails with a reason."""
    target = targets["coordinator"]
    before = await target.state()
    try:
        await target.handle.query("decisions", args=list(args))
        COUNTS["decisions query (answered)"] += 1
    except WorkflowQueryFailedError as err:
        assert str(err), describe(args)
        COUNTS["decisions query (refused)"] += 1
    assert await target.state() == before


# ---------------------------------------------------------------- loop


async def ignored_reviews(target: Target) -> Any:
    ignored = (await target.handle.query(RetrainingLoop.status)).record.approval.ignored
    return (len(ignored), ignored[-1].at, ignored[-1].reason) if ignored else None


@FUZZ
@given(args=arguments(REVIEW_NEAR, oversized=True), name=st.sampled_from(["approve", "reject"]))
async def test_loop_review_updates(targets: dict[str, Target], args: tuple[Any, ...], name: str):
    """Refused whatever they carry: malformed (the reason names the fields), or well formed
    but the loop is not awaiting approval."""
    await refused_update(targets["loop"], name, args)


@FUZZ
@given(args=arguments(REVIEW_NEAR), name=st.sampled_from(["approve", "reject"]))
async def test_loop_review_signals(targets: dict[str, Target], args: tuple[Any, ...], name: str):
    target = targets["loop"]
    await ignored_signal(target, name, args, lambda: ignored_reviews(target))


@FUZZ
@given(args=arguments())
async def test_loop_slot_granted_signal(targets: dict[str, Target], args: tuple[Any, ...]):
    """An unexpected or malformed grant is logged and dropped: the loop does not move."""
    target = targets["loop"]
    before = await target.state()
    await target.handle.signal("training_slot_granted", args=list(args))
    await target.handle.query(RetrainingLoop.status)  # the signal's task has run
    assert await target.state() == before
    COUNTS["training_slot_granted signal (dropped)"] += 1


# ---------------------------------------------------------------- rollout

ROLLOUT_VERBS = ["pause", "resume", "approve", "promote", "abort"]


async def refused_commands(target: Target) -> Any:
    refused = [c for c in (await target.handle.query(StagedRollout.status)).commands if c.refused]
    return (len(refused), refused[-1].at, refused[-1].refused) if refused else None


@FUZZ
@given(args=arguments(COMMAND_NEAR, oversized=True), name=st.sampled_from(ROLLOUT_VERBS))
async def test_rollout_command_updates(
    targets: dict[str, Target], args: tuple[Any, ...], name: str
):
    if valid(lambda: one_message(args, RolloutCommand, name)):
        COUNTS[f"rollout {name} update (valid, skipped)"] += 1
        return
    await refused_update(targets["rollout"], name, args)


@FUZZ
@given(args=arguments(COMMAND_NEAR), name=st.sampled_from(ROLLOUT_VERBS))
async def test_rollout_command_signals(
    targets: dict[str, Target], args: tuple[Any, ...], name: str
):
    target = targets["rollout"]
    if valid(lambda: one_message(tuple(decoded(a) for a in args), RolloutCommand, name)):
        COUNTS[f"rollout {name} signal (valid, skipped)"] += 1
        return
    await ignored_signal(target, name, args, lambda: refused_commands(target))


# ---------------------------------------------------------------- drift monitor, slots


@FUZZ
@given(args=arguments(st.just({"notify_coordinator": "yes"}), oversized=True))
async def test_drift_check_update(targets: dict[str, Target], args: tuple[Any, ...]):
    if valid(lambda: one_message(args, CheckRequest, "check")):
        COUNTS["drift check update (valid, skipped)"] += 1
        return
    await refused_update(targets["drift"], "check", args)


@FUZZ
@given(args=arguments(st.just({"reason": 7}), oversized=True))
async def test_drift_check_performance_update(targets: dict[str, Target], args: tuple[Any, ...]):
    if valid(lambda: one_message(args, CheckRequest, "check_performance")):
        COUNTS["drift check_performance update (valid, skipped)"] += 1
        return
    await refused_update(targets["drift"], "check_performance", args)


async def ignored_slot_messages(target: Target) -> Any:
    ignored = (await target.handle.query(TrainingSlots.status)).ignored
    return (len(ignored), ignored[-1].at, ignored[-1].reason) if ignored else None


SLOT_MESSAGES: dict[str, type[BaseModel]] = {
    "request": SlotRequest,
    "release": SlotRelease,
    "set_limit": SetLimit,
}


@FUZZ
@given(
    args=arguments(st.just({"limit": 0}), st.just({"loop_id": 5})),
    name=st.sampled_from(["request", "release", "set_limit"]),
)
async def test_slots_signals(targets: dict[str, Target], args: tuple[Any, ...], name: str):
    target = targets["slots"]
    model = SLOT_MESSAGES[name]
    if valid(lambda: one_message(tuple(decoded(a) for a in args), model, name)):
        COUNTS[f"slots {name} signal (valid, skipped)"] += 1
        return
    await ignored_signal(target, name, args, lambda: ignored_slot_messages(target))


@FUZZ
@given(args=arguments(st.just({"limit": 0}), st.just({"limit": "3"}), oversized=True))
async def test_slots_set_limit_update(targets: dict[str, Target], args: tuple[Any, ...]):
    if valid(lambda: one_message(args, SetLimit, "set_limit")):
        COUNTS["slots set_limit update (valid, skipped)"] += 1
        return
    await refused_update(targets["slots"], "set_limit", args)


def test_every_handler_is_fuzzed() -> None:
    """The fuzz above covers every signal and update each workflow defines."""
    fuzzed = {
        ModelCoordinator: {
            "trigger", "trigger_batch", "submit_trigger", "submit_triggers", "set_policy",
            "pause", "resume", "decisions", "performance_observed",
        },
        RetrainingLoop: {"approve", "reject", "training_slot_granted"},
        StagedRollout: set(ROLLOUT_VERBS),
        DriftMonitor: {"check", "check_performance"},
        TrainingSlots: {"request", "release", "set_limit"},
    }  # fmt: skip
    for workflow_class, covered in fuzzed.items():
        from temporalio.workflow import _Definition

        definition = _Definition.must_from_class(workflow_class)
        defined = {*definition.signals, *definition.updates} - {None}
        defined |= {"decisions"} if workflow_class is ModelCoordinator else set()
        assert defined <= covered, f"{workflow_class.__name__}: {defined - covered} not fuzzed"
    assert names.TASK_QUEUE  # the fuzz workers use their own task queues
