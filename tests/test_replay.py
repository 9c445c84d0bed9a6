"""Replay committed histories of the coordinator, the retraining loop, the rollout and the drift
monitor: a workflow change that breaks running executions (non-determinism) fails here.
Re-record with `make histories` only for a deliberate break."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.sandbox import workflow_runner
from workflows.coordinator.workflow import ModelCoordinator
from workflows.drift.workflow import DriftMonitor
from workflows.loop.workflow import RetrainingLoop
from workflows.rollout.workflow import StagedRollout
from workflows.slots.workflow import TrainingSlots

HISTORY_DIR = Path(__file__).parent / "histories"
HISTORIES = sorted(
    path
    for pattern in (
        "coordinator-*.json",
        "retraining-loop-*.json",
        "rollout-*.json",
        "drift-monitor-*.json",
        "training-slots-*.json",
    )
    for path in HISTORY_DIR.glob(pattern)
)


def test_histories_are_committed() -> None:
    assert len(HISTORIES) >= 9, "run `make histories` to record them"


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.name)
async def test_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=[ModelCoordinator, RetrainingLoop, StagedRollout, DriftMonitor, TrainingSlots],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)
