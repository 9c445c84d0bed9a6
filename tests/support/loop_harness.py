"""Run real RetrainingLoops against a real local backend in a test's own retrain home."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from activities.specs import SpecStore
from starters.demo.synthetic import write_demo_dataset
from workflows.common import names
from workflows.coordinator.policy import merge_patch
from workflows.coordinator.triggers import TriggerKind
from workflows.loop.audit import LoopView
from workflows.loop.models import EventRef, LoopResult, RetrainingLoopInput, TriggerContext
from workflows.loop.workflow import RetrainingLoop
from workflows.spec.models import ModelSpec

HISTORY_DAYS = 30


def write_dataset(
    home: Path, model: str, today: date, drift_days_ago: int | None = None
) -> ModelSpec:
    """A month of labelled data ending `today`: the server's day, since the loop's window ends
    at workflow time (which the shared time-skipping server may have moved ahead).

    The spec deploys all at once: these loops are about the steps before deployment (staged
    rollouts on a live endpoint are tests/test_rollout*.py's subject)."""
    drift_day = today - timedelta(days=drift_days_ago) if drift_days_ago is not None else None
    spec = write_demo_dataset(
        home,
        model,
        start=today - timedelta(days=HISTORY_DAYS - 1),
        days=HISTORY_DAYS,
        drift_day=drift_day,
        rows_per_day=200,
        baseline_rows=3000,
        golden_rows=1000,
    )
    return with_changes(spec, {"loop": {"deployment": {"mode": "all_at_once"}}})


def with_changes(spec: ModelSpec, changes: dict[str, Any]) -> ModelSpec:
    """The spec with a JSON merge patch applied (`{"loop": {"approval": {...}}}`)."""
    return ModelSpec.model_validate(merge_patch(json.loads(spec.model_dump_json()), changes))


def register(home: Path, spec: ModelSpec) -> ModelSpec:
    SpecStore(home).register(spec)
    return spec


def manual_trigger(event_id: str = "manual-1", **changes: Any) -> TriggerContext:
    event = EventRef(
        event_id=event_id,
        kind=TriggerKind.MANUAL,
        priority=3,
        source="test",
        received_at=datetime.now(UTC),
    )
    fields: dict[str, Any] = {
        "events": [event],
        "priority": 3,
        "kinds": [TriggerKind.MANUAL],
        "origin": "manual trigger (test)",
    }
    fields.update(changes)
    return TriggerContext.model_validate(fields)


async def start_loop(
    client: Client,
    task_queue: str,
    model: str,
    number: int = 1,
    trigger: TriggerContext | None = None,
) -> WorkflowHandle[RetrainingLoop, LoopResult]:
    """Start a loop the way the coordinator does (same id, input and search attributes)."""
    trigger = trigger or manual_trigger()
    return await client.start_workflow(
        RetrainingLoop.run,
        RetrainingLoopInput(
            model=model,
            loop_number=number,
            coordinator_id=names.coordinator_id(model),
            trigger=trigger,
            estimated_cost=1.0,
            policy_version=1,
        ),
        id=names.retraining_loop_id(model, number),
        task_queue=task_queue,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(names.MODEL_NAME, model),
                SearchAttributePair(names.TRIGGER_KIND, [k.value for k in trigger.kinds]),
                SearchAttributePair(names.LOOP_STAGE, "started"),
            ]
        ),
    )


async def view(handle: WorkflowHandle[RetrainingLoop, LoopResult]) -> LoopView:
    return await handle.query(RetrainingLoop.status)


async def awaiting_approval(handle: WorkflowHandle[RetrainingLoop, LoopResult]) -> LoopView | None:
    current = await view(handle)
    return current if current.awaiting_approval else None


def notifications(home: Path, loop_id: str) -> list[dict[str, Any]]:
    files = sorted(
        (home / "notifications").glob(f"{loop_id}-*.json"),
        key=lambda p: int(p.stem.rsplit("-", 1)[-1]),
    )
    return [json.loads(p.read_text()) for p in files]
