"""Scoring: every policy on every case and retraining cost, divided by the oracle's cost.

A cell is one (stream, retraining cost); its ratio for a policy is the mean over the cell's
seeds of cost / oracle cost, and its retrainings the mean count. Summaries over cells: the
geometric mean, the median and the worst ratio.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.decision_quality.matrix import Case, oracle, schedule_cost
from bench.decision_quality.policies import PERIODS, WEEKLY, adaptive, break_even, periodic

COST_FACTORS = (0.05, 0.25, 1.0)
SCHEDULED = ("adwin", "ddm", "page_hinkley", "psi", "default_spec")
BEST_PERIOD = "best_period"
POLICIES = (
    "adaptive",
    "break_even",
    BEST_PERIOD,
    "weekly",
    "every_batch",
    "never",
    *SCHEDULED,
)


def mean_batch(case: Case) -> float:
    served = case.counts[case.window :]
    return sum(served) / len(served)


def schedules_for(case: Case, cost: float) -> dict[str, list[int]]:
    schedules = {
        "adaptive": adaptive(case, cost),
        "break_even": break_even(case, cost),
        "never": [],
        "every_batch": periodic(case, 1),
        "weekly": periodic(case, WEEKLY),
    }
    for period in PERIODS:
        schedules[f"period_{period}"] = periodic(case, period)
    for name in SCHEDULED:
        schedules[name] = case.schedules[name]
    return schedules


@dataclass
class Run:
    """One case at one retraining cost."""

    stream: str
    seed: int | None
    factor: float
    cost: float
    oracle_cost: float
    oracle_retrains: int
    costs: dict[str, float] = field(default_factory=dict)
    retrains: dict[str, int] = field(default_factory=dict)

    def ratio(self, policy: str) -> float:
        return self.costs[policy] / self.oracle_cost if self.oracle_cost > 0 else 1.0


def run_case(
    case: Case,
    factor: float,
    extra: dict[str, Callable[[Case, float], list[int]]] | None = None,
) -> Run:
    cost = factor * mean_batch(case)
    best, plan = oracle(case, cost)
    run = Run(case.stream, case.seed, factor, cost, best, len(plan))
    schedules = schedules_for(case, cost)
    for name, policy in (extra or {}).items():
        schedules[name] = policy(case, cost)
    for name, schedule in schedules.items():
        total, _ = schedule_cost(case, schedule, cost)
        run.costs[name] = total
        run.retrains[name] = sum(1 for b in set(schedule) if case.window <= b < case.batches - 1)
    return run


@dataclass
class Cell:
    stream: str
    factor: float
    seeds: list[int | None]
    ratios: dict[str, float]
    retrains: dict[str, float]
    oracle_retrains: float
    best_period: int


def cells(runs: Sequence[Run], policies: Sequence[str] = POLICIES) -> list[Cell]:
    grouped: dict[tuple[str, float], list[Run]] = {}
    for run in runs:
        grouped.setdefault((run.stream, run.factor), []).append(run)
    out = []
    for (stream, factor), group in grouped.items():

        def mean_ratio(name: str, group: list[Run] = group) -> float:
            return statistics.fmean(r.ratio(name) for r in group)

        def mean_retrains(name: str, group: list[Run] = group) -> float:
            return statistics.fmean(r.retrains[name] for r in group)

        period = min(PERIODS, key=lambda p: mean_ratio(f"period_{p}"))
        ratios, retrains = {}, {}
        for name in policies:
            source = f"period_{period}" if name == BEST_PERIOD else name
            ratios[name] = mean_ratio(source)
            retrains[name] = mean_retrains(source)
        for name in group[0].costs:
            if name not in ratios and not name.startswith("period_"):
                ratios[name] = mean_ratio(name)
                retrains[name] = mean_retrains(name)
        out.append(
            Cell(
                stream=stream,
                factor=factor,
                seeds=[r.seed for r in group],
                ratios=ratios,
                retrains=retrains,
                oracle_retrains=statistics.fmean(r.oracle_retrains for r in group),
                best_period=period,
            )
        )
    return out


@dataclass
class Summary:
    geometric_mean: float
    median: float
    worst: float
    worst_cell: str
    retrains: float  # mean per cell


def summarise(selected: Sequence[Cell], policy: str) -> Summary | None:
    if not selected:
        return None
    ratios = [c.ratios[policy] for c in selected]
    worst = max(selected, key=lambda c: c.ratios[policy])
    return Summary(
        geometric_mean=math.exp(statistics.fmean(math.log(r) for r in ratios)),
        median=statistics.median(ratios),
        worst=max(ratios),
        worst_cell=f"{worst.stream} x{worst.factor:g}",
        retrains=statistics.fmean(c.retrains[policy] for c in selected),
    )
