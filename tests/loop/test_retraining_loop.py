"""The RetrainingLoop end to end on the local backend: real data files, real training in its own
process, a real MLflow registry, on the time-skipping server (approval timeouts of days take
seconds). Every branch: coverage, gate, approval granted / rejected / timed out with reminders,
refused reviews, golden-set tampering, training faults, unknown model."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.drift.profile import profiles_dir
from activities.local.registry import MlflowRegistry
from activities.loop.audit import AuditStore
from tests.conftest import Servers
from tests.support.helpers import CoordinatorProbe, eventually
from tests.support.loop_harness import (
    awaiting_approval,
    manual_trigger,
    notifications,
    register,
    start_loop,
    view,
    with_changes,
    write_dataset,
)
from tests.support.webhook import WebhookReceiver, with_webhook
from workers.worker import build_worker
from workflows.coordinator.triggers import Severity, TriggerEvent, TriggerKind
from workflows.loop.audit import IgnoredReview, LoopStage
from workflows.loop.models import LoopResult, LoopStatus, ReviewDecision
from workflows.loop.workflow import RetrainingLoop

pytestmark = pytest.mark.time_skipping_only

NO_APPROVAL = {"loop": {"approval": {"first_deployment": False}}}


@pytest_asyncio.fixture
async def today(env: WorkflowEnvironment) -> date:
    return (await env.get_current_time()).date()


@pytest_asyncio.fixture
async def worker(client: Client, task_queue: str, home: Path) -> Worker:
    return build_worker(client, home=home, task_queue=task_queue)


async def test_first_deployment_waits_for_approval_then_promotes(
    env: WorkflowEnvironment,
    worker: Worker,
    home: Path,
    model: str,
    task_queue: str,
    today: date,
    webhook: WebhookReceiver,
) -> None:
    spec = register(home, with_webhook(write_dataset(home, model, today)))
    async with worker:
        handle = await start_loop(env.client, task_queue, model)
        waiting = await eventually(lambda: awaiting_approval(handle), timeout=120, what="approval")
        assert waiting.stage is LoopStage.AWAITING_APPROVAL
        assert waiting.record.approval.reasons == [
            "first deployment: there is no champion to compare with"
        ]
        details = (await handle.describe()).raw_description.workflow_extended_info
        assert details is not None
        record = await handle.execute_update(
            RetrainingLoop.approve, ReviewDecision(reviewer="ana", comment="first model")
        )
        assert record.reviewer == "ana" and record.via == "update"
        result = await handle.result()

    assert result.status is LoopStatus.PROMOTED, result.summary
    assert result.candidate_version == "1"
    assert result.retrieval_query and "date>=" in result.retrieval_query
    window_files = [uri for uri in result.dataset_hashes if "/labelled/" in uri]
    assert len(window_files) == 30
    assert all(len(h) == 64 for h in result.dataset_hashes.values())

    champion = MlflowRegistry(home).champion(model)
    assert champion is not None and champion.version == "1"

    audit = AuditStore(home).read(model, handle.id)
    assert audit is not None and audit.outcome is not None
    assert audit.outcome.status is LoopStatus.PROMOTED
    assert audit.spec_hash == spec.content_hash()
    assert audit.approval.review is not None and audit.approval.review.comment == "first model"
    assert audit.evaluation is not None and audit.champion is None
    assert {"holdout", "golden", "baseline"} <= set(audit.evaluation.candidate)
    assert audit.verdict is not None and audit.verdict.passed
    assert [s.stage for s in audit.stages] == [
        LoopStage.STARTED,
        LoopStage.DATA_WINDOW,
        LoopStage.TRAINING,
        LoopStage.REGISTERING,
        LoopStage.EVALUATING,
        LoopStage.AWAITING_APPROVAL,
        LoopStage.DEPLOYING,
        LoopStage.DONE,
    ]
    assert [n["subject"] for n in notifications(home, handle.id)] == [
        f"{model}: approval needed ({handle.id})"
    ]
    assert webhook.subjects() == [f"{model}: approval needed ({handle.id})"]


async def _two_loops(
    env: WorkflowEnvironment, worker: Worker, task_queue: str, model: str
) -> tuple[LoopResult, WorkflowHandle[RetrainingLoop, LoopResult], LoopResult]:
    async with worker:
        first = await (await start_loop(env.client, task_queue, model, 1)).result()
        second_handle = await start_loop(env.client, task_queue, model, 2)
        return first, second_handle, await second_handle.result()


async def test_second_loop_is_compared_with_the_champion(
    env: WorkflowEnvironment, worker: Worker, home: Path, model: str, task_queue: str, today: date
) -> None:
    register(home, with_changes(write_dataset(home, model, today, drift_days_ago=10), NO_APPROVAL))
    # Nothing to skip; skipping while awaiting a result sometimes jumps the test server 3,650
    # days ahead (a default 10-year run timeout), leaving the second loop's window empty.
    with env.auto_time_skipping_disabled():
        first, second_handle, second = await _two_loops(env, worker, task_queue, model)
    assert first.status is LoopStatus.PROMOTED, first.summary
    audit = AuditStore(home).read(model, second_handle.id)
    assert audit is not None and audit.champion is not None
    assert audit.champion.version == "1"
    assert audit.evaluation is not None and audit.evaluation.champion is not None
    deltas = {(d.metric.value, d.dataset) for d in audit.evaluation.deltas}
    assert ("roc_auc", "holdout") in deltas
    # The same data and seed: the candidate matches the champion, which is no regression.
    assert second.status is LoopStatus.PROMOTED, second.summary
    assert MlflowRegistry(home).champion(model).version == "2"  # type: ignore[union-attr]
    # The drift monitor's reference is now what version 2 learned from, built at promotion.
    assert audit.deployment is not None and audit.deployment.reference_profile is not None
    assert audit.deployment.reference_profile.startswith("v2-")
    assert f"{second_handle.id}/data/training.parquet" in audit.deployment.reference_profile
    profiles = [p.name for p in profiles_dir(home, model).iterdir()]
    assert sorted(p.split("-")[0] for p in profiles) == ["v1", "v2"]


async def test_reviewer_rejects_by_signal(
    env: WorkflowEnvironment, worker: Worker, home: Path, model: str, task_queue: str, today: date
) -> None:
    register(home, write_dataset(home, model, today))
    async with worker:
        handle = await start_loop(env.client, task_queue, model)
        await eventually(lambda: awaiting_approval(handle), timeout=120, what="approval")
        await handle.signal("reject", {"reviewer": "bo", "comment": "holdout too small"})
        result = await handle.result()
    assert result.status is LoopStatus.REJECTED_BY_REVIEWER
    assert result.summary == "rejected by bo: holdout too small"
    assert MlflowRegistry(home).champion(model) is None
    # The registry records the decision: the candidate is no longer the challenger.
    [candidate] = MlflowRegistry(home).versions(model)
    assert candidate.aliases == []


async def test_refused_reviews_change_nothing(
    env: WorkflowEnvironment, worker: Worker, home: Path, model: str, task_queue: str, today: date
) -> None:
    spec = with_changes(
        write_dataset(home, model, today), {"loop": {"approval": {"reviewers": ["ana"]}}}
    )
    register(home, spec)
    async with worker:
        handle = await start_loop(env.client, task_queue, model)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(RetrainingLoop.approve, ReviewDecision(reviewer="ana"))
        assert "not awaiting approval" in str(refused.value.cause)

        await eventually(lambda: awaiting_approval(handle), timeout=120, what="approval")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(RetrainingLoop.approve, ReviewDecision(reviewer="eve"))
        assert "allow-list" in str(refused.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(RetrainingLoop.reject, ReviewDecision(reviewer=" "))
        assert "must not be empty" in str(refused.value.cause)

        await handle.signal("approve", {"reviewer": "eve"})
        await handle.signal("approve", {"reviewer": "ana", "unknown": 1})
        await handle.signal("approve", "yes please")
        ignored = await eventually(
            lambda: _ignored(handle, 3), timeout=30, what="ignored signals recorded"
        )
        assert "allow-list" in ignored[0].reason
        assert "malformed approve" in ignored[1].reason and "unknown" in ignored[1].reason
        assert "malformed approve" in ignored[2].reason
        assert (await view(handle)).awaiting_approval

        await handle.signal("approve", {"reviewer": "ana", "comment": "ok"})
        result = await handle.result()
        history = await handle.fetch_history()
    failed_tasks = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    assert failed_tasks == []  # malformed and refused input never failed a workflow task
    assert result.status is LoopStatus.PROMOTED
    audit = AuditStore(home).read(model, handle.id)
    assert audit is not None and audit.approval.review is not None
    assert audit.approval.review.reviewer == "ana" and audit.approval.review.via == "signal"
    assert len(audit.approval.ignored) == 3


async def _ignored(
    handle: WorkflowHandle[RetrainingLoop, LoopResult], count: int
) -> list[IgnoredReview] | None:
    ignored = (await view(handle)).record.approval.ignored
    return ignored if len(ignored) >= count else None


async def test_approval_times_out_after_reminders_and_an_escalation(
    home: Path, model: str, task_queue: str
) -> None:
    # A server of its own: skipping time waits for every timer due on the server, and the
    # shared one holds other tests' workflows whose workers are gone.
    env = await Servers.start("time-skipping")
    async with env:
        today = (await env.get_current_time()).date()
        approval = {"reminder_every": "1d", "escalate_after": "2d", "timeout": "3d"}
        spec = with_changes(write_dataset(home, model, today), {"loop": {"approval": approval}})
        register(home, spec)
        async with build_worker(env.client, home=home, task_queue=task_queue):
            handle = await start_loop(env.client, task_queue, model)
            result = await handle.result()  # the time-skipping server skips the three days
    assert result.status is LoopStatus.REJECTED_BY_REVIEWER
    assert "no approval within 72h" in result.summary
    audit = AuditStore(home).read(model, handle.id)
    assert audit is not None
    assert audit.approval.reminders_sent == 2
    assert audit.approval.escalated_at is not None and audit.approval.timed_out_at is not None
    assert audit.approval.requested_at is not None
    assert audit.approval.timed_out_at - audit.approval.requested_at >= timedelta(days=3)
    sent = notifications(home, handle.id)
    subjects = [n["subject"].split(":", 1)[1].split(" (")[0].strip() for n in sent]
    assert subjects == [
        "approval needed",
        "reminder 1: approval still needed",
        "escalation: approval overdue",
        "reminder 2: approval still needed",
    ]
    assert sent[2]["channel"] == "escalation"


async def test_high_drift_trigger_requires_approval(
    env: WorkflowEnvironment, worker: Worker, home: Path, model: str, task_queue: str, today: date
) -> None:
    register(home, with_changes(write_dataset(home, model, today), NO_APPROVAL))
    trigger = manual_trigger(kinds=[TriggerKind.DRIFT], drift_severity=Severity.HIGH)
    async with worker:
        handle = await start_loop(env.client, task_queue, model, trigger=trigger)
        waiting = await eventually(lambda: awaiting_approval(handle), timeout=120, what="approval")
        assert waiting.record.approval.reasons == ["high drift"]
        await handle.execute_update(RetrainingLoop.approve, ReviewDecision(reviewer="ana"))
        assert (await handle.result()).status is LoopStatus.PROMOTED


async def test_insufficient_data_ends_with_the_numbers(
    env: WorkflowEnvironment, worker: Worker, home: Path, model: str, task_queue: str, today: date
) -> None:
    spec = with_changes(
        write_dataset(home, model, today), {"loop": {"window": {"min_rows": 10**6}}}
    )
    register(home, spec)
    async with worker:
        result = await (await start_loop(env.client, task_queue, model)).result()
    assert result.status is LoopStatus.INSUFFICIENT_DATA
    assert "min_rows" in result.summary and "1e+06" in result.summary
    assert result.dataset_hashes  # the listing is recorded even when nothing trains
    assert MlflowRegistry(home).versions(model) == []


async def test_failed_guardrail_rejects_and_notifies(
    env: WorkflowEnvironment,
    worker: Worker,
    home: Path,
    model: str,
    task_queue: str,
    today: date,
    webhook: WebhookReceiver,
) -> None:
    gates = {"loop": {"guardrails": {"golden_floor": 0.999}}}
    register(home, with_webhook(with_changes(write_dataset(home, model, today), gates)))
    async with worker:
        handle = await start_loop(env.client, task_queue, model)
        result = await handle.result()
    assert result.status is LoopStatus.REJECTED_BY_GATE
    assert "golden" in result.summary
    [sent] = notifications(home, handle.id)
    assert "rejected by the evaluation gate" in sent["subject"]
    assert "What to do next" in sent["body"]
    assert webhook.subjects() == [sent["subject"]]
    assert MlflowRegistry(home).champion(model) is None
    assert [v.aliases for v in MlflowRegistry(home).versions(model)] == [[]]


async def test_changed_golden_set_fails_loudly(
    env: WorkflowEnvironment, worker: Worker, home: Path, model: str, task_queue: str, today: date
) -> None:
    spec = register(home, with_changes(write_dataset(home, model, today), NO_APPROVAL))
    # Nothing to skip (see test_second_loop_is_compared_with_the_champion).
    with env.auto_time_skipping_disabled():
        async with worker:
            first = await (await start_loop(env.client, task_queue, model, 1)).result()
            assert first.status is LoopStatus.PROMOTED
            golden = home / spec.data.golden_set
            golden.write_bytes(golden.read_bytes() + b"tampered")
            handle = await start_loop(env.client, task_queue, model, 2)
            second = await handle.result()
    assert second.status is LoopStatus.FAILED
    assert "golden" in second.summary.lower()
    assert any("GOLDEN SET CHANGED" in n["subject"] for n in notifications(home, handle.id))


@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [
        ("tests.support.training_entrypoints:failing", "is all null in this window"),
        ("no_such_module.train:fit", "no_such_module"),
    ],
)
async def test_training_faults_end_cleanly_with_the_reason(
    env: WorkflowEnvironment,
    worker: Worker,
    home: Path,
    model: str,
    task_queue: str,
    today: date,
    entrypoint: str,
    expected: str,
) -> None:
    spec = with_changes(write_dataset(home, model, today), {"training": {"entrypoint": entrypoint}})
    register(home, spec)
    async with worker:
        result = await (await start_loop(env.client, task_queue, model)).result()
    assert result.status is LoopStatus.FAILED
    assert result.summary.startswith("training failed") and expected in result.summary
    assert MlflowRegistry(home).versions(model) == []


async def test_unknown_model_fails_cleanly(
    env: WorkflowEnvironment, worker: Worker, home: Path, model: str, task_queue: str
) -> None:
    async with worker:
        result = await (await start_loop(env.client, task_queue, model)).result()
    assert result.status is LoopStatus.FAILED
    assert "no registered spec" in result.summary
    assert AuditStore(home).read(model, result.loop_id) is not None


async def test_corrupted_partition_fails_cleanly(
    env: WorkflowEnvironment, worker: Worker, home: Path, model: str, task_queue: str, today: date
) -> None:
    spec = register(home, write_dataset(home, model, today))
    partition = sorted((home / spec.data.labelled).glob("date=*/*.parquet"))[-3]
    partition.write_bytes(b"PAR1 not really parquet")
    async with worker:
        result = await (await start_loop(env.client, task_queue, model)).result()
    assert result.status is LoopStatus.FAILED
    assert partition.name in result.summary


async def test_cancelled_loop_records_its_audit(
    env: WorkflowEnvironment, worker: Worker, home: Path, model: str, task_queue: str, today: date
) -> None:
    register(home, write_dataset(home, model, today))
    async with worker:
        handle = await start_loop(env.client, task_queue, model)
        await eventually(lambda: awaiting_approval(handle), timeout=120, what="approval")
        await handle.cancel()
        await eventually(
            lambda: asyncio.to_thread(AuditStore(home).read, model, handle.id),
            timeout=120,
            what="audit record",
        )
    audit = AuditStore(home).read(model, handle.id)
    assert audit is not None and audit.outcome is not None
    assert audit.outcome.status is LoopStatus.CANCELLED


async def test_coordinator_and_loop_together(
    env: WorkflowEnvironment,
    worker: Worker,
    home: Path,
    model: str,
    task_queue: str,
    today: date,
) -> None:
    """The coordinator starts the real loop, which waits for approval; the coordinator coalesces
    a trigger meanwhile, records the promotion, then runs the follow-up against the champion."""
    register(home, write_dataset(home, model, today))
    probe = CoordinatorProbe(env.client, task_queue, model)
    async with worker:
        await probe.start()
        first = await probe.submit(
            TriggerEvent(kind=TriggerKind.MANUAL, source="test", event_id="first")
        )
        assert first.loop_id is not None
        await probe.started_loop(first.loop_id)
        loop = env.client.get_workflow_handle_for(RetrainingLoop.run, first.loop_id)
        await eventually(lambda: awaiting_approval(loop), timeout=120, what="approval")
        waiting = await probe.submit(
            TriggerEvent(kind=TriggerKind.SCHEDULED, source="test", event_id="nightly")
        )
        assert waiting.reason.value == "loop_active"
        await loop.execute_update(RetrainingLoop.approve, ReviewDecision(reviewer="ana"))
        status = await probe.wait_status(
            lambda s: s.loops_started == 2 and s.active_loop is None,
            what="the follow-up loop to close",
            timeout=180,
        )
        assert await probe.task_failures() == 0
    assert status.last_outcome is not None
    assert status.last_outcome.status is LoopStatus.PROMOTED, status.last_outcome.summary
    assert status.last_outcome.summary == "version 2 promoted to champion (previous: 1)"
    assert MlflowRegistry(home).champion(model).version == "2"  # type: ignore[union-attr]
