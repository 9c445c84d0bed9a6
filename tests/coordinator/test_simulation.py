"""The offline simulator (`workflows/coordinator/simulation.py`, `retrain simulate`): the same pure
policy and coordinator rules replayed on a labelled stream, and the proof that the real workflows
take the same decisions: a ModelCoordinator on the time-skipping server, fed the same
observations day by day, its loops replaced by a double that ends at once with the candidate's
time-ordered holdout loss."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from functools import cache, partial

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from starters.api.coordinators import Coordinators
from starters.api.simulate import error_matrix
from starters.api.streams import Stream
from tests.support.helpers import CoordinatorProbe, eventually, skip_time
from tests.support.loop_doubles import SIMULATED_CANDIDATE_LOSS, SimulatedLoop
from workers.sandbox import workflow_runner
from workflows.coordinator.models import Action, Decision, Reason
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.simulation import (
    ErrorMatrix,
    oracle,
    periodic,
    schedule_cost,
    simulate,
)
from workflows.coordinator.triggers import PerformanceObservation, TriggerEvent, TriggerKind
from workflows.coordinator.workflow import ModelCoordinator

BATCHES, ROWS, CHANGE, WINDOW = 40, 150, 20, 5
POLICY = TriggerPolicy.model_validate(
    {
        "cooldown": "1h",
        "max_daily_trainings": 4,
        "daily_budget": 1000,
        "cost": {"currency": "EUR", "hourly_rate": 15.0},
        "adaptive": {"value_per_error": 1.0},
    }
)


@cache
def stream() -> Stream:
    """The demo's Agrawal stream, a batch a day: function 0, then function 2 from CHANGE on."""
    import numpy as np

    from starters.demo.synthetic import FEATURES, generate_rows

    features, labels, batch_of = [], [], []
    for batch in range(BATCHES):
        day = date(2025, 1, 1) + timedelta(days=batch)
        rows = generate_rows(day, ROWS, function=0 if batch < CHANGE else 2, seed=5)
        features.append(np.column_stack([rows.column(n).to_numpy() for n in FEATURES]))
        labels.append(rows.column("label").to_numpy())
        batch_of.append(np.full(ROWS, batch))
    return Stream(
        name="agrawal",
        features=np.vstack(features).astype(np.float64),
        labels=np.concatenate(labels).astype(np.int64),
        batch_of=np.concatenate(batch_of).astype(np.int64),
        feature_names=list(FEATURES),
        categorical=[],
        batch_end=[
            datetime(2025, 1, 1, 23, tzinfo=UTC) + timedelta(days=b) for b in range(BATCHES)
        ],
        description="agrawal",
    )


@cache
def matrix() -> ErrorMatrix:
    return error_matrix(stream(), WINDOW)


def ends_from(start: datetime) -> list[datetime]:
    return [start + timedelta(days=b) for b in range(BATCHES)]


def test_the_replay_retrains_after_the_change_and_costs_near_the_oracle() -> None:
    result = simulate(POLICY, matrix(), stream().batch_end)
    assert result.schedule and all(b >= CHANGE for b in result.schedule[:1])
    assert result.schedule[0] <= CHANGE + 2
    decisions = result.adaptive()
    assert len(decisions) == BATCHES - WINDOW - 1
    keeps = [d for d in decisions if d.reason == Reason.ADAPTIVE_KEEP.value]
    assert keeps and all(d.action is Action.IGNORE for d in keeps)
    assert all(d.numbers["retraining_cost"] == 15.0 for d in decisions)
    cost = 15.0
    best, best_schedule = oracle(matrix(), cost)
    adaptive_cost, _ = schedule_cost(matrix(), result.schedule, cost)
    never, _ = schedule_cost(matrix(), [], cost)
    every, _ = schedule_cost(matrix(), periodic(matrix(), 1), cost)
    assert best <= adaptive_cost < min(never, every)
    assert schedule_cost(matrix(), best_schedule, cost)[0] == best


def test_a_year_of_daily_decisions_and_the_hard_limits() -> None:
    counts = [100] * 366
    # A model's error rate grows by a point a day since its training: steady drift.
    errors = [[min(100, 5 + (j - i)) if 4 <= i < j else -1 for j in range(366)] for i in range(366)]
    year = ErrorMatrix(counts=counts, errors=errors, window=5)
    ends = [datetime(2025, 1, 1, 12, tzinfo=UTC) + timedelta(days=d) for d in range(366)]
    result = simulate(POLICY, year, ends)
    assert len(result.adaptive()) == 366 - 5 - 1
    gaps = [b - a for a, b in zip(result.schedule, result.schedule[1:], strict=False)]
    # Once the drift rate is learnt across models, a steady period (the cost-optimal one).
    assert len(gaps) > 10 and max(gaps[5:]) - min(gaps[5:]) <= 1
    # A cooldown longer than that period is a hard limit: retrainings wait for its end.
    slow = simulate(POLICY.with_changes({"cooldown": "12d"}), year, ends)
    deferred = [d for d in slow.decisions if d.reason == Reason.COOLDOWN.value]
    assert (
        deferred
        and min(b - a for a, b in zip(slow.schedule, slow.schedule[1:], strict=False)) >= 12
    )


def test_the_simulator_refuses_what_it_cannot_replay() -> None:
    with pytest.raises(ValueError, match="replays the adaptive policy"):
        simulate(TriggerPolicy(), matrix(), stream().batch_end)
    with pytest.raises(ValueError, match="batch end times"):
        simulate(POLICY, matrix(), stream().batch_end[:-1])
    with pytest.raises(ValueError, match="at least 7 are needed"):
        ErrorMatrix(counts=[1] * 6, errors=[[0] * 6] * 6, window=5)


# ---- the real workflows take the same decisions --------------------------------------------


@activity.defn(name=SIMULATED_CANDIDATE_LOSS)
def simulated_candidate_loss(event_id: str) -> tuple[float, int]:
    """The candidate of the loop answering observation `obs-batch-J`: its time-ordered holdout."""
    batch = int(event_id.rsplit("-", 1)[-1])
    return matrix().holdout(batch)


@pytest.mark.time_skipping_only
@pytest.mark.own_server  # days are skipped: other tests' timers must not be in the way
async def test_the_real_coordinator_takes_the_simulators_decisions(
    env: WorkflowEnvironment, client: Client, task_queue: str, model: str
) -> None:
    now = await env.get_current_time()
    # Batches end at noon: far from the policy's midnight day boundary.
    noon = datetime(now.year, now.month, now.day, 12, tzinfo=UTC) + timedelta(days=1)
    ends = ends_from(noon)
    expected = simulate(POLICY, matrix(), ends, model=model)
    probe = CoordinatorProbe(client, task_queue, model)
    coordinators = probe.coordinators
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[ModelCoordinator, SimulatedLoop],
        activities=[simulated_candidate_loss],
        activity_executor=ThreadPoolExecutor(max_workers=2),
        workflow_runner=workflow_runner(),
    )
    decisions: list[Decision] = []
    async with worker:
        await probe.start(POLICY)
        await skip_time(env, ends[WINDOW - 1] - await env.get_current_time())
        first = await probe.submit(
            TriggerEvent(kind=TriggerKind.MANUAL, source="simulate", event_id="first-deployment")
        )
        assert first.action is Action.START
        serving = "1"
        await eventually(lambda: _idle(coordinators, model), timeout=60, what="first loop")
        for batch in range(WINDOW, BATCHES - 1):
            await skip_time(env, ends[batch] - await env.get_current_time())
            served = matrix().errors[_batch_of(expected, serving)][batch]
            await coordinators.handle(model).signal(
                "performance_observed",
                PerformanceObservation(
                    check_id=f"batch-{batch}",
                    version=serving,
                    loss_sum=float(served),
                    count=ROWS,
                    volume=ROWS,
                ),
            )
            decision = await eventually(
                partial(_decision_for, coordinators, model, f"obs-batch-{batch}"),
                timeout=60,
                what=f"the decision on batch {batch}",
            )
            decisions.append(decision)
            if decision.action is Action.START:
                await eventually(lambda: _idle(coordinators, model), timeout=60, what="the loop")
                serving = str(int(serving) + 1)
    real = [(d.action, d.reason.value) for d in decisions]
    simulated = [(d.action, d.reason) for d in expected.adaptive()]
    assert real == simulated
    assert [d.numbers["expected_excess_cost"] for d in decisions] == [
        d.numbers["expected_excess_cost"] for d in expected.adaptive()
    ]
    assert any(action is Action.START for action, _ in real)


def _batch_of(result: object, version: str) -> int:
    """The batch whose model a version is: version 1 the warm-up's, then one per retraining."""
    from workflows.coordinator.simulation import Simulation

    assert isinstance(result, Simulation)
    number = int(version)
    return WINDOW - 1 if number == 1 else result.schedule[number - 2]


async def _idle(coordinators: Coordinators, model: str) -> bool:
    status = await coordinators.status(model)
    return status.active_loop is None and status.last_outcome is not None


async def _decision_for(coordinators: Coordinators, model: str, event_id: str) -> Decision | None:
    for decision in await coordinators.decisions(model, limit=20):
        if event_id in decision.event_ids:
            return decision
    await asyncio.sleep(0)
    return None
