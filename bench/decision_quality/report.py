"""The benchmark's tables: printed, and written as Markdown and JSON beside each other."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bench.decision_quality.scoring import POLICIES, Cell, summarise

TARGET_DRIFTING_GEOMEAN = 1.10
TARGET_WORST = 1.4
TARGET_STATIONARY = 1.05

LABELS = {
    "adaptive": "adaptive (workflows.coordinator.adaptive)",
    "break_even": "break-even (no noise allowance)",
    "best_period": "best fixed period, in hindsight",
    "weekly": "weekly (every 7 batches)",
    "every_batch": "every batch",
    "never": "never",
    "adwin": "ADWIN on errors",
    "ddm": "DDM on errors",
    "page_hinkley": "Page-Hinkley on errors",
    "psi": "PSI > 0.2 on a feature",
    "default_spec": "default spec (drift monitor + coordinator rules)",
}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def group_summary(cells: Sequence[Cell], stationary: Sequence[str]) -> dict[str, Any]:
    drifting = [c for c in cells if c.stream not in stationary]
    still = [c for c in cells if c.stream in stationary]
    out: dict[str, Any] = {}
    for policy in POLICIES:
        d = summarise(drifting, policy)
        s = summarise(still, policy)
        out[policy] = {
            "drifting": asdict(d) if d else None,
            "stationary": asdict(s) if s else None,
        }
    return out


def retrains_by_cost(cells: Sequence[Cell], stationary: Sequence[str]) -> dict[str, float]:
    """Mean retrainings of the adaptive policy per cost factor, over the drifting cells."""
    factors = sorted({c.factor for c in cells})
    return {
        f"{factor:g}": statistics.fmean(
            c.retrains["adaptive"]
            for c in cells
            if c.factor == factor and c.stream not in stationary
        )
        for factor in factors
        if any(c.factor == factor and c.stream not in stationary for c in cells)
    }


def targets(summary: dict[str, Any], by_cost: dict[str, float]) -> dict[str, Any]:
    adaptive, best = summary["adaptive"], summary["best_period"]
    drifting, still = adaptive["drifting"], adaptive["stationary"]
    counts = [by_cost[k] for k in sorted(by_cost, key=float)]
    return {
        "drifting_geometric_mean": {
            "target": TARGET_DRIFTING_GEOMEAN,
            "value": drifting and drifting["geometric_mean"],
            "met": bool(drifting and drifting["geometric_mean"] <= TARGET_DRIFTING_GEOMEAN),
        },
        "worst_cell": {
            "target": TARGET_WORST,
            "value": drifting and drifting["worst"],
            "met": bool(drifting and drifting["worst"] <= TARGET_WORST),
        },
        "stationary_geometric_mean": {
            "target": TARGET_STATIONARY,
            "value": still and still["geometric_mean"],
            "met": bool(still and still["geometric_mean"] <= TARGET_STATIONARY),
        },
        "better_than_best_period": {
            "target": "adaptive < best period in hindsight (drifting geometric mean)",
            "value": best["drifting"] and best["drifting"]["geometric_mean"],
            "met": bool(
                drifting
                and best["drifting"]
                and drifting["geometric_mean"] < best["drifting"]["geometric_mean"]
            ),
        },
        "fewer_retrainings_when_dearer": {
            "target": "mean retrainings never rise, and fall overall, as the cost rises",
            "value": by_cost,
            "met": len(counts) >= 2
            and all(a >= b for a, b in itertools.pairwise(counts))
            and counts[0] > counts[-1],
        },
    }


def markdown_group(
    title: str,
    seeds: Sequence[int | None],
    cells: Sequence[Cell],
    summary: dict[str, Any],
    met: dict[str, Any] | None,
    stationary: Sequence[str],
    kind: str = "drifting",
) -> str:
    lines = [f"### {title}", ""]
    shown = ", ".join(str(s) for s in seeds)
    lines.append(f"Seeds: {shown}. Cost / oracle cost, per cell the mean over its seeds; ")
    lines.append("retrainings: mean per run.")
    lines.append("")
    has_still = any(c.stream in stationary for c in cells)
    header = f"| policy | {kind}: geo. mean | median | worst (cell) | retrainings |"
    rule = "|---|---:|---:|---|---:|"
    if has_still:
        header += " stationary: geo. mean | worst | retrainings |"
        rule += "---:|---:|---:|"
    lines += [header, rule]
    for policy in POLICIES:
        d, s = summary[policy]["drifting"], summary[policy]["stationary"]
        row = f"| {LABELS[policy]} | "
        row += (
            f"{_fmt(d['geometric_mean'])} | {_fmt(d['median'])} | "
            f"{_fmt(d['worst'])} ({d['worst_cell']}) | {_fmt(d['retrains'], 1)} |"
            if d
            else "- | - | - | - |"
        )
        if has_still:
            row += (
                f" {_fmt(s['geometric_mean'])} | {_fmt(s['worst'])} | {_fmt(s['retrains'], 1)} |"
                if s
                else " - | - | - |"
            )
        lines.append(row)
    if met:
        lines += ["", "Targets (adaptive policy):", ""]
        for name, check in met.items():
            value = check["value"]
            shown_value = (
                ", ".join(f"x{k}: {v:.1f}" for k, v in value.items())
                if isinstance(value, dict)
                else _fmt(value)
            )
            mark = "met" if check["met"] else "NOT met"
            lines.append(f"- {name}: {shown_value} (target {check['target']}): **{mark}**")
    lines += ["", "Per cell (adaptive ratio / retrainings; oracle retrainings; best period):", ""]
    lines += ["| stream | cost x batch | adaptive | oracle retrainings | best period |"]
    lines += ["|---|---:|---:|---:|---:|"]
    for c in sorted(cells, key=lambda c: (c.stream, c.factor)):
        lines.append(
            f"| {c.stream} | {c.factor:g} | {c.ratios['adaptive']:.3f} / "
            f"{c.retrains['adaptive']:.1f} | {c.oracle_retrains:.1f} | "
            f"{c.best_period} ({c.ratios['best_period']:.3f}) |"
        )
    return "\n".join(lines) + "\n"
