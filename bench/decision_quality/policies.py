"""The policies whose decisions depend on the retraining cost, played on a case's error matrix.

Each sees what a deployment sees: after serving batch j, the serving model's errors on it (and,
when it retrains, the new candidate's holdout), never the future.
"""

from __future__ import annotations

from bench.decision_quality.matrix import Case
from workflows.coordinator.adaptive import AdaptiveConfig, AdaptivePolicy

PERIODS = (1, 2, 3, 5, 7, 10, 14, 21, 30)
WEEKLY = 7


def periodic(case: Case, period: int) -> list[int]:
    """Retrain after every `period` served batches (1 = every batch)."""
    return list(range(case.window + period - 1, case.batches - 1, period))


def break_even(case: Case, cost: float) -> list[int]:
    """The textbook break-even rule: the loss on the first batch after a training is what a
    fresh model achieves; retrain when the excess accumulated since reaches the retraining
    cost. No allowance for noise."""
    serving, schedule = case.first, []
    fresh: float | None = None
    excess = 0.0
    for j in range(case.window, case.batches - 1):
        rate = case.errors[serving][j] / case.counts[j]
        if fresh is None:
            fresh = rate
        excess += (rate - fresh) * case.counts[j]
        if excess >= cost:
            schedule.append(j)
            serving, fresh, excess = j, None, 0.0
    return schedule


def holdout(case: Case, j: int) -> tuple[float, int]:
    """A candidate trained at the end of batch j, evaluated on a time-ordered holdout: the
    same recipe trained on the W batches before batch j, scored on batch j (known by then:
    its labels are in). This is the one-step-ahead loss a fresh model has right now."""
    return case.errors[j - 1][j] / case.counts[j], case.counts[j]


def adaptive(
    case: Case,
    cost: float,
    *,
    use_holdout: bool = True,
    **settings: float | int | None,
) -> list[int]:
    """`workflows.coordinator.adaptive.AdaptivePolicy` with one error worth 1 and every served
    prediction labelled: retraining cost `cost`, in errors. It is told what the protocol is
    (retrainings learn from the last `case.window` batches) and each candidate's time-ordered
    holdout; its settings are otherwise its defaults."""
    settings.setdefault("training_batches", case.window)
    config = AdaptiveConfig.model_validate(
        {"value_per_loss": 1.0, "retraining_cost": cost, "currency": "errors", **settings}
    )
    policy = AdaptivePolicy(config)
    serving, schedule = case.first, []
    policy.retrained(version=str(serving))
    for j in range(case.window, case.batches - 1):
        policy.observe(loss_sum=float(case.errors[serving][j]), count=case.counts[j])
        if policy.decide().retrain:
            schedule.append(j)
            serving = j
            loss, count = holdout(case, j) if use_holdout else (None, None)
            policy.retrained(version=str(j), holdout_loss=loss, holdout_count=count)
    return schedule
