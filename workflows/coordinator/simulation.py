"""What the coordinator would have decided on a labelled stream: the same pure adaptive policy and
coordinator rules, replayed without Temporal (`retrain simulate`, and the time-skipping test that
holds the real workflows to the same decisions).

The stream comes as a prequential error matrix (`ErrorMatrix`): the model trained at the end of
batch i (on the batches before) would get `errors[i][j]` rows of batch j wrong (j > i). A
decision is taken at the end of each served batch, after its labels arrived; a retraining at the
end of batch j is instant and its model serves batch j + 1. The replay drives
`CoordinatorRules` exactly as the workflow does:

- the first model is deployed by a manual trigger at the end of the warm-up (`window` batches);
- after each served batch, the performance monitor's observation of it (the serving model's
  errors, the batch's rows as labelled and served traffic) goes to `on_observation`: the
  adaptive policy learns it and decides, inside the rules' hard limits (cooldown, daily limit,
  budget) evaluated at the batch's end time; work a limit deferred comes due (`on_timer`) at
  the first batch end at or after its time (the real coordinator's timer may fire between
  batch ends: its loop would start a little earlier);
- a loop the rules start ends at once, promoted, its candidate's loss the time-ordered holdout
  (the same recipe trained on the batches before batch j, scored on batch j: the one-step-ahead
  loss a fresh model has) and `on_loop_closed` tells the policy.

Pure and deterministic (plain lists, no numpy): a year of daily decisions takes a fraction of a
second. Costs: `schedule_cost` (errors plus retrainings x cost, in errors), the oracle by
dynamic programming over the matrix (the cheapest schedule in hindsight), fixed periods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from workflows.coordinator.models import Action, Number
from workflows.coordinator.policy import TriggerPolicy
from workflows.coordinator.rules import CoordinatorRules, Step, new_state
from workflows.coordinator.triggers import PerformanceObservation, TriggerEvent, TriggerKind
from workflows.loop.models import LoopResult, LoopStatus

UNDEFINED = -1


@dataclass(frozen=True)
class ErrorMatrix:
    """`counts[j]`: rows of batch j; `errors[i][j]`: rows of batch j the model trained at the end
    of batch i gets wrong (UNDEFINED unless window - 1 <= i < j)."""

    counts: list[int]
    errors: list[list[int]]
    window: int

    def __post_init__(self) -> None:
        t = len(self.counts)
        if t < self.window + 2:
            raise ValueError(
                f"{t} batches; at least {self.window + 2} are needed (a {self.window}-batch "
                "training window, then two served batches)"
            )
        if len(self.errors) != t or any(len(row) != t for row in self.errors):
            raise ValueError(f"the error matrix must be {t} x {t}")

    @property
    def batches(self) -> int:
        return len(self.counts)

    @property
    def first(self) -> int:
        """The batch at whose end the first model is trained."""
        return self.window - 1

    def holdout(self, j: int) -> tuple[float, int]:
        """A candidate trained at the end of batch j, evaluated time-ordered: the same recipe
        trained before batch j, scored on batch j (its labels are in by then)."""
        return self.errors[j - 1][j] / self.counts[j], self.counts[j]


def schedule_cost(matrix: ErrorMatrix, retrain_after: list[int], cost: float) -> tuple[float, int]:
    """(total cost, errors) of a schedule, in errors: the serving model's errors on every served
    batch, plus `cost` per retraining (retrainings after the last batch serve nothing)."""
    when = {b for b in retrain_after if matrix.window <= b < matrix.batches - 1}
    serving, errors = matrix.first, 0
    for j in range(matrix.window, matrix.batches):
        errors += matrix.errors[serving][j]
        if j in when:
            serving = j
    return errors + cost * len(when), errors


def oracle(matrix: ErrorMatrix, cost: float) -> tuple[float, list[int]]:
    """The cheapest schedule in hindsight (dynamic programming over the error matrix):
    best[m] = the least cost of batches j.. when model m serves batch j."""
    t, first, errors = matrix.batches, matrix.first, matrix.errors
    best = [0.0] * t
    choice: list[list[bool]] = [[False] * t for _ in range(t)]
    for j in range(t - 1, matrix.window - 1, -1):
        new = [0.0] * t
        retrain_value = cost + best[j] if j < t - 1 else float("inf")
        for m in range(first, j):
            keep = best[m]
            if retrain_value < keep:
                new[m] = errors[m][j] + retrain_value
                choice[j][m] = True
            else:
                new[m] = errors[m][j] + keep
        best = new
    schedule: list[int] = []
    serving = first
    for j in range(matrix.window, t):
        if choice[j][serving]:
            schedule.append(j)
            serving = j
    return best[first], schedule


def periodic(matrix: ErrorMatrix, period: int) -> list[int]:
    """Retrain after every `period` served batches."""
    return list(range(matrix.window + period - 1, matrix.batches - 1, period))


@dataclass(frozen=True)
class SimulatedDecision:
    """One decision the coordinator took, at the end of `batch`."""

    batch: int
    at: datetime
    action: Action
    reason: str
    message: str
    loop_id: str | None
    numbers: dict[str, Number]


@dataclass
class Simulation:
    decisions: list[SimulatedDecision] = field(default_factory=list)
    # Batches at whose end a retraining ran (its model serves the next batch).
    schedule: list[int] = field(default_factory=list)
    # Per batch from the first served one: the batch whose model served it.
    serving: list[int] = field(default_factory=list)

    def adaptive(self) -> list[SimulatedDecision]:
        """The adaptive policy's decisions (keep, retrain, or what the limits made of a
        retrain), one per served batch but the last."""
        return [d for d in self.decisions if "retrain" in d.numbers]


def _check(policy: TriggerPolicy) -> None:
    if policy.mode != "adaptive" or policy.adaptive is None:
        raise ValueError(
            'the simulator replays the adaptive policy: the trigger policy needs mode "adaptive" '
            "and adaptive.value_per_error"
        )


def simulate(
    policy: TriggerPolicy,
    matrix: ErrorMatrix,
    ends: list[datetime],
    *,
    model: str = "simulated",
    holdout: bool = True,
) -> Simulation:
    """Replay the stream's batches through the coordinator's rules (see the module docstring).
    `ends[j]`: when batch j ends (aware datetimes, non-decreasing); `holdout`: tell the policy
    each candidate's time-ordered holdout loss."""
    _check(policy)
    if len(ends) != matrix.batches:
        raise ValueError(f"{len(ends)} batch end times for {matrix.batches} batches")
    if any(moment.tzinfo is None for moment in ends):
        raise ValueError("batch end times must be timezone-aware")
    rules = CoordinatorRules(new_state(model, policy))
    result = Simulation()
    # The batch whose model each version is (versions are loop numbers, as in the registry).
    batch_of_version: dict[str, int] = {}
    serving = matrix.first

    def record(step: Step, batch: int) -> None:
        for decision in step.decisions:
            result.decisions.append(
                SimulatedDecision(
                    batch=batch,
                    at=decision.at,
                    action=decision.action,
                    reason=decision.reason.value,
                    message=decision.message,
                    loop_id=decision.loop_id,
                    numbers=dict(decision.numbers),
                )
            )

    def run_loops(step: Step, batch: int) -> None:
        """Loops the rules start end at once, promoted; closing one may start the next (a
        follow-up), which ends at once too."""
        nonlocal serving
        while step.start is not None:
            start = step.start
            loss, count = matrix.holdout(batch) if holdout and batch > matrix.first else (0.0, 0)
            version = str(start.number)
            batch_of_version[version] = batch
            if batch != matrix.first:
                result.schedule.append(batch)
            serving = batch
            step = rules.on_loop_closed(
                LoopResult(
                    loop_id=start.loop_id,
                    status=LoopStatus.PROMOTED,
                    summary=f"simulated: the model of batch {batch} serves from batch {batch + 1}",
                    candidate_version=version,
                    candidate_loss=loss if count else None,
                    candidate_loss_rows=count or None,
                ),
                ends[batch],
            )
            record(step, batch)

    first = rules.on_trigger(
        TriggerEvent(kind=TriggerKind.MANUAL, source="simulate", event_id="first-deployment"),
        ends[matrix.first],
    )
    record(first, matrix.first)
    if first.start is None:
        raise ValueError(f"the first deployment did not start: {first.decision.message}")
    run_loops(first, matrix.first)
    for j in range(matrix.window, matrix.batches):
        result.serving.append(serving)
        if j == matrix.batches - 1:
            break  # nothing is left to serve after the last batch: no decision matters
        now = ends[j]
        version = next(v for v, b in batch_of_version.items() if b == serving)
        step = rules.on_observation(
            PerformanceObservation(
                check_id=f"batch-{j}",
                version=version,
                window_start=ends[j - 1],
                window_end=now,
                loss_sum=float(matrix.errors[serving][j]),
                count=matrix.counts[j],
                volume=matrix.counts[j],
            ),
            now,
        )
        record(step, j)
        run_loops(step, j)
        # Work deferred by a limit (a cooldown's end) comes due at the first batch end at or
        # after its time: its loop trains on the data up to then and serves the next batch.
        due = rules.on_timer(now)
        record(due, j)
        run_loops(due, j)
    return result
