"""Drift statistics: this project's engine vs scipy per feature vs Evidently, on one data set.

    .venv/bin/python -m bench.drift_suite [--quick] [--rounds 3] [--evidently]
        [--evidently-python PATH] [--no-preset] [--threads 2] [--output PATH]

Data (deterministic, `--seed`): 100,000 reference rows and 1,000,000 current rows of 20 numeric
features (5 mean-shifted by 0.01-0.2 SD, one with its SD x1.1, three with ties: Poisson counts,
ages in whole years, a zero-inflated amount; the rest unshifted and of various shapes) and 5
categorical ones (20 categories each, one with shifted shares). The parent generates it once
into a temporary directory (.npy, column-major: one contiguous array per feature); every
measurement is its own subprocess that loads it, so each starts from the same state and its
peak memory is its own.

The suite, timed three ways (`--quick`: 2,000 / 20,000 rows, 4 + 2 features, 1 round):

1. ours: `numeric_drift` + `categorical_drift` (`activities.drift.statistics`) given the
   reference profile built beforehand (loaded from its .npz as the monitor does); numeric
   columns are passed as 1-D arrays, categorical ones as object arrays of str (as pandas holds
   them; pyarrow arrays would be faster still). The one-time reference build is measured once,
   in its own subprocess, and reported apart.
2. scipy, per feature, as one would write it: `ks_2samp` (default method), `wasserstein_distance`,
   PSI on `np.quantile` decile edges with `np.histogram`, `jensenshannon` on those shares, and
   `chi2_contingency` on a table of pandas `value_counts`.
3. Evidently 0.7 (`--evidently-python`, default this interpreter): a `Report` of `ValueDrift`
   metrics computing the same suite (psi, jensenshannon, ks, wasserstein per numeric feature,
   chisquare per categorical one), from pandas DataFrames; its time includes building the two
   `Dataset`s. Also (unless `--no-preset`) `DataDriftPreset()` with its defaults, what most users
   run: one statistic per column plus summaries, so less work than the suite. Evidently's usage
   telemetry is switched off in its subprocess (DO_NOT_TRACK, read by evidently.telemetry, and
   ITERATIVE_DO_NOT_TRACK, read by iterative-telemetry). When Evidently cannot be imported the
   reason is printed and the other two are reported.

Each measurement: load the data, build what the implementation takes (DataFrames for
Evidently), run it once on the first 1,000 rows (lazy imports and first-call costs out of the
way), read VmHWM from /proc/self/status (the data-loaded baseline), time one run, read VmHWM
again: the peak RSS and its increase over the baseline. Implementations alternate order from
round to round; the machine is shared and noisy, so what matters is each round's ratio
(other / ours) and their median, next to the targets: >= 20x faster than Evidently, >= 5x faster
than per-feature scipy, and a lower peak RSS than Evidently.

Agreement: our statistics from the first timed run are compared with scipy's on the same data:
KS statistic and p-value (scipy's default at these sizes is its asymptotic method), W1
(relative), chi-square statistic, p-value and dof (from the scipy run), and PSI / JS recomputed
on our reference's bins from the raw current values (`jensenshannon` for JS). The largest
difference per statistic is printed and stored.

Results are printed as tables and written to `bench/results/drift_suite.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# Only the standard library and numpy at module level: the Evidently worker may run under
# another interpreter (one whose pandas Evidently supports), with nothing else installed.

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "drift_suite.json"
TARGET_VS_EVIDENTLY = 20.0
TARGET_VS_SCIPY = 5.0
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "ITERATIVE_DO_NOT_TRACK": "1"}
PSI_BINS = 10
WARMUP_ROWS = 1_000
WORKER_TIMEOUT = 1_800
EVIDENTLY_SUITE_METHODS = ("psi", "jensenshannon", "ks", "wasserstein")

OURS, SCIPY, EVIDENTLY, PRESET, BUILD = "ours", "scipy", "evidently", "evidently_preset", "build"
LABELS = {
    OURS: "ours",
    SCIPY: "scipy",
    EVIDENTLY: "Evidently",
    PRESET: "Evidently preset",
}


# ---------------------------------------------------------------------- the data


@dataclass(frozen=True)
class NumericFeature:
    name: str
    kind: str
    shift: float = 0.0  # current mean moves by this many reference SDs
    scale: float = 1.0  # current spread multiplied by this


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    categories: int = 20
    shifted: bool = False


NUMERIC_FEATURES = [
    NumericFeature("shift_0.01sd", "normal", shift=0.01),
    NumericFeature("shift_0.02sd", "normal", shift=0.02),
    NumericFeature("shift_0.05sd", "normal", shift=0.05),
    NumericFeature("shift_0.1sd", "lognormal", shift=0.1),
    NumericFeature("shift_0.2sd", "gamma", shift=0.2),
    NumericFeature("scale_1.1x", "normal", scale=1.1),
    NumericFeature("visits_poisson", "poisson"),
    NumericFeature("age_years", "age"),
    NumericFeature("amount_zero_inflated", "zero_inflated"),
    NumericFeature("income_lognormal", "lognormal"),
    NumericFeature("latency_exponential", "exponential"),
    NumericFeature("score_uniform", "uniform"),
    NumericFeature("returns_student_t", "student_t"),
    NumericFeature("ratio_beta", "beta"),
    NumericFeature("temperature_normal", "normal"),
    NumericFeature("balance_large", "large"),
    NumericFeature("tenure_gamma", "gamma"),
    NumericFeature("clicks_poisson", "poisson"),
    NumericFeature("x_normal", "normal"),
    NumericFeature("y_normal", "normal"),
]
CATEGORICAL_FEATURES = [
    CategoricalFeature("plan_shifted", shifted=True),
    CategoricalFeature("region"),
    CategoricalFeature("device"),
    CategoricalFeature("channel"),
    CategoricalFeature("segment"),
]
QUICK_NUMERIC = ["shift_0.05sd", "scale_1.1x", "visits_poisson", "x_normal"]
QUICK_CATEGORICAL = ["plan_shifted", "region"]


def _numeric_sample(
    rng: np.random.Generator, feature: NumericFeature, size: int, current: bool
) -> npt.NDArray[np.float64]:
    shift = feature.shift if current else 0.0
    scale = feature.scale if current else 1.0
    kind = feature.kind
    if kind == "normal":
        return rng.normal(shift, scale, size)
    if kind == "lognormal":  # SD of log-normal(0, 0.5) is ~0.6
        return np.exp(rng.normal(0.0, 0.5, size)) * scale + shift * 0.6
    if kind == "gamma":  # SD of gamma(2, 1) is ~1.41
        return rng.gamma(2.0, 1.0, size) * scale + shift * 1.41
    if kind == "poisson":
        return rng.poisson(3.0, size).astype(np.float64)
    if kind == "age":
        ages: npt.NDArray[np.float64] = rng.normal(41.0, 12.0, size)
        np.round(ages, out=ages)
        np.clip(ages, 18.0, 90.0, out=ages)
        return ages
    if kind == "zero_inflated":
        amounts: npt.NDArray[np.float64] = np.exp(rng.normal(3.0, 1.0, size))
        np.round(amounts, 2, out=amounts)
        amounts[rng.random(size) < 0.35] = 0.0
        return amounts
    if kind == "exponential":
        return rng.exponential(120.0, size)
    if kind == "uniform":
        return rng.random(size)
    if kind == "student_t":
        return rng.standard_t(4, size) * 0.02
    if kind == "beta":
        return rng.beta(2.0, 5.0, size)
    if kind == "large":
        return rng.normal(2.5e6, 4e5, size)
    raise ValueError(f"unknown feature kind {kind}")


def _category_shares(rng: np.random.Generator, feature: CategoricalFeature) -> tuple[Any, Any]:
    base = rng.dirichlet(np.full(feature.categories, 2.0))
    if not feature.shifted:
        return base, base
    # A tenth of the mass moves to the categories in reverse order of size.
    return base, 0.9 * base + 0.1 * np.sort(base)[np.argsort(np.argsort(-base))]


@dataclass(frozen=True)
class Config:
    reference_rows: int
    current_rows: int
    numeric: list[NumericFeature]
    categorical: list[CategoricalFeature]
    seed: int


def generate(config: Config, directory: Path) -> None:
    """Both windows as .npy (one row per feature, so each feature is contiguous) + meta.json."""
    rng = np.random.default_rng(config.seed)
    for side, rows in (("reference", config.reference_rows), ("current", config.current_rows)):
        numeric = np.empty((len(config.numeric), rows), dtype=np.float64)
        for j, feature in enumerate(config.numeric):
            numeric[j] = _numeric_sample(rng, feature, rows, current=side == "current")
        np.save(directory / f"{side}_numeric.npy", numeric)
        codes = np.empty((len(config.categorical), rows), dtype=np.int16)
        for j, cat in enumerate(config.categorical):
            shares = _category_shares(np.random.default_rng([config.seed, j]), cat)
            codes[j] = rng.choice(cat.categories, size=rows, p=shares[side == "current"])
        np.save(directory / f"{side}_codes.npy", codes)
    meta = {
        "numeric": [f.name for f in config.numeric],
        "categorical": [f.name for f in config.categorical],
        "labels": [[f"{f.name}_{i:02d}" for i in range(f.categories)] for f in config.categorical],
    }
    (directory / "meta.json").write_text(json.dumps(meta))


@dataclass
class Window:
    numeric: npt.NDArray[np.float64]  # (features, rows), C order
    categorical: list[npt.NDArray[Any]]  # object arrays of str, as pandas would hold them


def load_window(directory: Path, side: str) -> tuple[Window, dict[str, Any]]:
    meta = json.loads((directory / "meta.json").read_text())
    numeric = np.load(directory / f"{side}_numeric.npy")
    codes = np.load(directory / f"{side}_codes.npy")
    labels = [np.array(names, dtype=object) for names in meta["labels"]]
    categorical = [labels[j][codes[j]] for j in range(codes.shape[0])]
    return Window(numeric, categorical), meta


# ---------------------------------------------------------------------- workers


def _hwm_mb() -> float | None:
    """Peak resident set size so far (Linux); None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _head(window: Window, rows: int) -> Window:
    return Window(window.numeric[:, :rows], [c[:rows] for c in window.categorical])


def _measure(run: Callable[[], Any], warmup: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
    warmup()
    baseline = _hwm_mb()
    started = time.perf_counter()
    output = run()
    seconds = time.perf_counter() - started
    peak = _hwm_mb()
    increase = peak - baseline if peak is not None and baseline is not None else None
    return {
        "seconds": seconds,
        "baseline_hwm_mb": baseline,
        "peak_hwm_mb": peak,
        "increase_mb": increase,
    }, output


def worker_build(directory: Path, threads: int) -> dict[str, Any]:
    from activities.drift.statistics import (
        build_categorical_reference,
        build_numeric_reference,
        save_references,
    )

    window, meta = load_window(directory, "reference")

    def build() -> Any:
        numeric = build_numeric_reference(meta["numeric"], list(window.numeric), bins=PSI_BINS)
        categorical = build_categorical_reference(meta["categorical"], window.categorical)
        return numeric, categorical

    measured, (numeric, categorical) = _measure(build, lambda: None)
    started = time.perf_counter()
    save_references(directory / "reference.npz", numeric, categorical)
    measured["save_seconds"] = time.perf_counter() - started
    measured["file_mb"] = (directory / "reference.npz").stat().st_size / 2**20
    return measured


def worker_ours(directory: Path, threads: int) -> dict[str, Any]:
    from activities.drift.statistics import categorical_drift, load_references, numeric_drift

    window, _ = load_window(directory, "current")
    numeric_ref, categorical_ref = load_references(directory / "reference.npz")

    def check(data: Window) -> tuple[list[Any], list[Any]]:
        return (
            numeric_drift(numeric_ref, list(data.numeric), threads=threads),
            categorical_drift(categorical_ref, data.categorical, threads=threads),
        )

    measured, (numeric, categorical) = _measure(
        lambda: check(window), lambda: check(_head(window, WARMUP_ROWS))
    )
    numeric_fields = ("name", "psi", "js", "ks_statistic", "ks_pvalue", "wasserstein")
    measured["numeric"] = [{k: getattr(s, k) for k in numeric_fields} for s in numeric]
    categorical_fields = ("name", "psi", "js", "chi2", "chi2_pvalue", "chi2_dof", "unseen_share")
    measured["categorical"] = [{k: getattr(s, k) for k in categorical_fields} for s in categorical]
    return measured


def _psi(ref: Any, cur: Any, epsilon: float = 1e-4) -> float:
    ref = np.where(ref == 0, epsilon, ref)
    cur = np.where(cur == 0, epsilon, cur)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def worker_scipy(directory: Path, threads: int) -> dict[str, Any]:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]
    import scipy.stats  # type: ignore[import-untyped, unused-ignore]
    from scipy.spatial.distance import (  # type: ignore[import-untyped, unused-ignore]
        jensenshannon,
    )

    reference, meta = load_window(directory, "reference")
    current, _ = load_window(directory, "current")

    def suite(ref: Window, cur: Window) -> dict[str, list[dict[str, Any]]]:
        numeric = []
        for j, name in enumerate(meta["numeric"]):
            r, c = ref.numeric[j], cur.numeric[j]
            ks = scipy.stats.ks_2samp(r, c)
            w1 = scipy.stats.wasserstein_distance(r, c)
            edges = np.quantile(r, np.linspace(0.0, 1.0, PSI_BINS + 1))
            edges[0], edges[-1] = -np.inf, np.inf
            p = np.histogram(r, edges)[0] / r.size
            q = np.histogram(c, edges)[0] / c.size
            numeric.append(
                {
                    "name": name,
                    "ks_statistic": float(ks.statistic),
                    "ks_pvalue": float(ks.pvalue),
                    "wasserstein": float(w1),
                    "psi": _psi(p, q),
                    "js": float(jensenshannon(p, q, base=2)),
                }
            )
        categorical = []
        for j, name in enumerate(meta["categorical"]):
            counts = pd.concat(
                [
                    pd.Series(ref.categorical[j]).value_counts(),
                    pd.Series(cur.categorical[j]).value_counts(),
                ],
                axis=1,
            ).fillna(0)
            test = scipy.stats.chi2_contingency(counts.to_numpy().T)
            categorical.append(
                {
                    "name": name,
                    "chi2": float(test.statistic),
                    "chi2_pvalue": float(test.pvalue),
                    "chi2_dof": int(test.dof),
                }
            )
        return {"numeric": numeric, "categorical": categorical}

    measured, output = _measure(
        lambda: suite(reference, current),
        lambda: suite(_head(reference, WARMUP_ROWS), _head(current, WARMUP_ROWS)),
    )
    measured.update(output)
    return measured


def _evidently(directory: Path, preset: bool) -> dict[str, Any]:
    import evidently  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]
    from evidently import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        DataDefinition,
        Dataset,
        Report,
    )
    from evidently.metrics import ValueDrift  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from evidently.presets import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        DataDriftPreset,
    )

    reference, meta = load_window(directory, "reference")
    current, _ = load_window(directory, "current")

    def frame(window: Window) -> Any:
        columns: dict[str, Any] = dict(zip(meta["numeric"], window.numeric, strict=True))
        columns.update(zip(meta["categorical"], window.categorical, strict=True))
        return pd.DataFrame(columns)

    ref_frame, cur_frame = frame(reference), frame(current)
    del reference, current  # the frames hold copies
    definition = DataDefinition(
        numerical_columns=meta["numeric"], categorical_columns=meta["categorical"]
    )
    if preset:
        metrics: list[Any] = [DataDriftPreset()]
    else:
        metrics = [
            ValueDrift(column=name, method=method)
            for name in meta["numeric"]
            for method in EVIDENTLY_SUITE_METHODS
        ] + [ValueDrift(column=name, method="chisquare") for name in meta["categorical"]]

    def run(ref: Any, cur: Any) -> Any:
        ref_data = Dataset.from_pandas(ref, data_definition=definition)
        cur_data = Dataset.from_pandas(cur, data_definition=definition)
        return Report(metrics).run(current_data=cur_data, reference_data=ref_data)

    measured, snapshot = _measure(
        lambda: run(ref_frame, cur_frame),
        lambda: run(ref_frame.head(WARMUP_ROWS), cur_frame.head(WARMUP_ROWS)),
    )
    measured["metrics"] = len(snapshot.dict()["metrics"])
    measured["version"] = evidently.__version__
    return measured


def worker_evidently(directory: Path, threads: int) -> dict[str, Any]:
    return _evidently(directory, preset=False)


def worker_evidently_preset(directory: Path, threads: int) -> dict[str, Any]:
    return _evidently(directory, preset=True)


WORKERS: dict[str, Callable[[Path, int], dict[str, Any]]] = {
    BUILD: worker_build,
    OURS: worker_ours,
    SCIPY: worker_scipy,
    EVIDENTLY: worker_evidently,
    PRESET: worker_evidently_preset,
}


# ---------------------------------------------------------------------- the parent


def _environment() -> dict[str, str]:
    env = dict(os.environ, **TELEMETRY_OFF)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_worker(kind: str, python: str, directory: Path, threads: int) -> dict[str, Any]:
    result = directory / f"result-{kind}.json"
    result.unlink(missing_ok=True)
    command = [python, "-m", "bench.drift_suite", "--worker", kind, "--data", str(directory)]
    command += ["--result", str(result), "--threads", str(threads)]
    proc = subprocess.run(
        command,
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0 or not result.exists():
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{kind} worker failed (exit {proc.returncode}):\n{tail}")
    measured: dict[str, Any] = json.loads(result.read_text())
    return measured


def probe_evidently(python: str) -> tuple[bool, str]:
    """(importable, version or the reason it is not)."""
    try:
        proc = subprocess.run(
            [python, "-c", "import evidently; print(evidently.__version__)"],
            cwd=ROOT,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, str(error)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return False, lines[-1] if lines else f"exit {proc.returncode}"
    return True, proc.stdout.strip()


def _max_abs(pairs: Sequence[tuple[float | None, float | None]]) -> float:
    worst = 0.0
    for ours, theirs in pairs:
        if ours is None or theirs is None:
            return math.inf
        worst = max(worst, abs(ours - theirs))
    return worst


def agreement(ours: dict[str, Any], scipy_run: dict[str, Any], directory: Path) -> dict[str, float]:
    """Largest difference per statistic between our first timed run and scipy on the data."""
    from scipy.spatial.distance import (  # type: ignore[import-untyped, unused-ignore]
        jensenshannon,
    )

    from activities.drift.statistics import load_references

    numeric_ref, categorical_ref = load_references(directory / "reference.npz")
    current, _ = load_window(directory, "current")
    psi_pairs, js_pairs = [], []
    for j, stats in enumerate(ours["numeric"]):
        # Our reference's bins (e_i-1, e_i], applied to the raw (unsorted) current values.
        edges = numeric_ref.edges[j]
        bins = np.searchsorted(edges, current.numeric[j], side="left")
        cur_share = np.bincount(bins, minlength=edges.size + 1) / current.numeric[j].size
        ref_share = numeric_ref.proportions[j]
        psi_pairs.append((stats["psi"], _psi(ref_share, cur_share)))
        js_pairs.append((stats["js"], float(jensenshannon(ref_share, cur_share, base=2))))
    w1_relative = 0.0
    for mine, theirs in zip(ours["numeric"], scipy_run["numeric"], strict=True):
        scale = max(abs(theirs["wasserstein"]), 1e-300)
        w1_relative = max(w1_relative, abs(mine["wasserstein"] - theirs["wasserstein"]) / scale)
    pairs = list(zip(ours["numeric"], scipy_run["numeric"], strict=True))
    cat_pairs = list(zip(ours["categorical"], scipy_run["categorical"], strict=True))
    del categorical_ref
    return {
        "ks_statistic": _max_abs([(a["ks_statistic"], b["ks_statistic"]) for a, b in pairs]),
        "ks_pvalue": _max_abs([(a["ks_pvalue"], b["ks_pvalue"]) for a, b in pairs]),
        "wasserstein_relative": w1_relative,
        "psi": _max_abs(psi_pairs),
        "js": _max_abs(js_pairs),
        "chi2": _max_abs([(a["chi2"], b["chi2"]) for a, b in cat_pairs]),
        "chi2_pvalue": _max_abs([(a["chi2_pvalue"], b["chi2_pvalue"]) for a, b in cat_pairs]),
        "chi2_dof": float(
            max((abs(a["chi2_dof"] - b["chi2_dof"]) for a, b in cat_pairs), default=0)
        ),
    }


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(rounds: list[dict[str, Any]], kinds: Sequence[str]) -> dict[str, Any]:
    def series(kind: str, field: str) -> list[float]:
        return [r["measurements"][kind][field] for r in rounds if kind in r["measurements"]]

    ratios: dict[str, float | None] = {}
    for kind in (SCIPY, EVIDENTLY, PRESET):
        ratios[f"{kind}/ours"] = _median([r["ratios"][kind] for r in rounds if kind in r["ratios"]])
    memory = {
        kind: {
            "peak_hwm_mb": _median([v for v in series(kind, "peak_hwm_mb") if v is not None]),
            "increase_mb": _median([v for v in series(kind, "increase_mb") if v is not None]),
            "baseline_hwm_mb": _median(
                [v for v in series(kind, "baseline_hwm_mb") if v is not None]
            ),
        }
        for kind in kinds
    }
    ours_peak = memory[OURS]["peak_hwm_mb"]
    evidently_peak = memory.get(EVIDENTLY, {}).get("peak_hwm_mb")
    vs_evidently = ratios[f"{EVIDENTLY}/ours"]
    vs_scipy = ratios[f"{SCIPY}/ours"]
    return {
        "seconds_median": {kind: _median(series(kind, "seconds")) for kind in kinds},
        "ratios_median": ratios,
        "memory_median": memory,
        "targets": {
            "evidently/ours": TARGET_VS_EVIDENTLY,
            "scipy/ours": TARGET_VS_SCIPY,
            "peak_memory": "ours below Evidently",
        },
        "met": {
            "evidently/ours": None if vs_evidently is None else vs_evidently >= TARGET_VS_EVIDENTLY,
            "scipy/ours": None if vs_scipy is None else vs_scipy >= TARGET_VS_SCIPY,
            "peak_memory": None
            if ours_peak is None or evidently_peak is None
            else ours_peak < evidently_peak,
        },
    }


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_report(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    kinds = result["config"]["implementations"]
    config = result["config"]
    console.print(
        f"\n[bold]Drift suite[/bold]: {config['reference_rows']:,} reference / "
        f"{config['current_rows']:,} current rows, {len(config['numeric'])} numeric + "
        f"{len(config['categorical'])} categorical features, {config['rounds']} round(s)"
    )
    if not config["evidently"]["available"]:
        console.print(f"[yellow]Evidently skipped: {config['evidently']['reason']}[/yellow]")
    build = result["reference_build"]
    console.print(
        f"reference build (one-time): {build['seconds']:.3f} s, "
        f"peak RSS {_fmt(build['peak_hwm_mb'], '.0f')} MB, "
        f"file {build['file_mb']:.1f} MB (saved in {build['save_seconds']:.3f} s)"
    )
    table = Table(title="Seconds per round (each in its own subprocess), ratios other / ours")
    table.add_column("round", justify="left")
    for kind in kinds:
        table.add_column(f"{LABELS[kind]} s", justify="right")
    for kind in kinds:
        if kind != OURS:
            table.add_column(f"{LABELS[kind]} / ours", justify="right")
    for i, round_ in enumerate(result["rounds"], 1):
        row = [str(i)]
        row += [_fmt(round_["measurements"][kind]["seconds"], ".3f") for kind in kinds]
        row += [_fmt(round_["ratios"].get(kind), ".1f") + "x" for kind in kinds if kind != OURS]
        table.add_row(*row)
    summary = result["summary"]
    row = ["median"]
    row += [_fmt(summary["seconds_median"][kind], ".3f") for kind in kinds]
    row += [
        _fmt(summary["ratios_median"][f"{kind}/ours"], ".1f") + "x"
        for kind in kinds
        if kind != OURS
    ]
    table.add_row(*row, style="bold")
    targets = {SCIPY: TARGET_VS_SCIPY, EVIDENTLY: TARGET_VS_EVIDENTLY}
    row = ["target", *([""] * len(kinds))]
    row += [f">= {targets[k]:.0f}x" if k in targets else "" for k in kinds if k != OURS]
    table.add_row(*row, style="dim")
    console.print(table)

    memory = Table(title="Memory (median over rounds): VmHWM after loading the data, after the run")
    for column in ("implementation", "data loaded MB", "peak MB", "increase MB"):
        memory.add_column(column, justify="left" if column == "implementation" else "right")
    for kind in kinds:
        m = summary["memory_median"][kind]
        memory.add_row(
            LABELS[kind],
            _fmt(m["baseline_hwm_mb"], ".0f"),
            _fmt(m["peak_hwm_mb"], ".0f"),
            _fmt(m["increase_mb"], ".0f"),
        )
    console.print(memory)

    agree = Table(title="Agreement with scipy on this data: largest difference per statistic")
    agree.add_column("statistic", justify="left")
    agree.add_column("max difference", justify="right")
    for name, value in result["agreement"].items():
        agree.add_row(name, f"{value:.2e}")
    console.print(agree)

    stats = Table(title="Our statistics (first round)")
    for column in ("feature", "PSI", "JS", "KS D", "KS p", "W1", "chi2 p"):
        stats.add_column(column, justify="left" if column == "feature" else "right")
    ours = result["ours_statistics"]
    for s in ours["numeric"]:
        stats.add_row(
            s["name"],
            _fmt(s["psi"], ".4f"),
            _fmt(s["js"], ".4f"),
            _fmt(s["ks_statistic"], ".4f"),
            _fmt(s["ks_pvalue"], ".2e"),
            _fmt(s["wasserstein"], ".4g"),
            "",
        )
    for s in ours["categorical"]:
        stats.add_row(
            s["name"],
            _fmt(s["psi"], ".4f"),
            _fmt(s["js"], ".4f"),
            "",
            "",
            "",
            _fmt(s["chi2_pvalue"], ".2e"),
        )
    console.print(stats)
    met = summary["met"]
    console.print(
        "targets: "
        + ", ".join(
            f"{name} {'met' if ok else 'missed' if ok is not None else 'n/a'}"
            for name, ok in met.items()
        )
    )


def run(args: argparse.Namespace, console: Any) -> dict[str, Any]:
    started = time.perf_counter()
    config = Config(
        reference_rows=2_000 if args.quick else 100_000,
        current_rows=20_000 if args.quick else 1_000_000,
        numeric=[f for f in NUMERIC_FEATURES if not args.quick or f.name in QUICK_NUMERIC],
        categorical=[
            f for f in CATEGORICAL_FEATURES if not args.quick or f.name in QUICK_CATEGORICAL
        ],
        seed=args.seed,
    )
    evidently_python = args.evidently_python or sys.executable
    use_evidently = args.evidently or not args.quick
    available, reason = probe_evidently(evidently_python) if use_evidently else (False, "")
    if not use_evidently:
        reason = "skipped in --quick mode (add --evidently)"
    elif not available:
        console.print(f"[yellow]Evidently is not importable with {evidently_python}: {reason}")
    kinds = [OURS, SCIPY]
    if available:
        kinds += [EVIDENTLY] + ([] if args.no_preset else [PRESET])
    pythons = {
        kind: evidently_python if kind in (EVIDENTLY, PRESET) else sys.executable for kind in kinds
    }

    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        directory = Path(tmp)
        console.print(f"[dim]generating {config.current_rows:,} + {config.reference_rows:,} rows…")
        generate(config, directory)
        console.print("[dim]building the reference profile…")
        build = run_worker(BUILD, sys.executable, directory, args.threads)
        rounds: list[dict[str, Any]] = []
        for i in range(args.rounds):
            order = kinds[i % len(kinds) :] + kinds[: i % len(kinds)]
            measurements: dict[str, Any] = {}
            for kind in order:
                console.print(f"[dim]round {i + 1}: {LABELS[kind]}…")
                measurements[kind] = run_worker(kind, pythons[kind], directory, args.threads)
            ours_seconds = measurements[OURS]["seconds"]
            ratios = {k: measurements[k]["seconds"] / ours_seconds for k in kinds if k != OURS}
            rounds.append({"order": order, "measurements": measurements, "ratios": ratios})
        first_ours = rounds[0]["measurements"][OURS]
        agree = agreement(first_ours, rounds[0]["measurements"][SCIPY], directory)
        ours_statistics = {k: first_ours[k] for k in ("numeric", "categorical")}

    for round_ in rounds:  # per-feature outputs are kept once, below
        for kind in (OURS, SCIPY):
            round_["measurements"][kind].pop("numeric", None)
            round_["measurements"][kind].pop("categorical", None)
    return {
        "benchmark": "drift_suite",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {
            "reference_rows": config.reference_rows,
            "current_rows": config.current_rows,
            "numeric": [asdict(f) for f in config.numeric],
            "categorical": [asdict(f) for f in config.categorical],
            "rounds": args.rounds,
            "seed": args.seed,
            "threads": args.threads,
            "quick": args.quick,
            "implementations": kinds,
            "evidently": {
                "python": evidently_python,
                "available": available,
                "version": reason if available else None,
                "reason": None if available else reason,
            },
        },
        "reference_build": build,
        "rounds": rounds,
        "summary": summarize(rounds, kinds),
        "agreement": agree,
        "ours_statistics": ours_statistics,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 round, no Evidently")
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (--quick: 1)")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--threads", type=int, default=2, help="our engine's column threads")
    parser.add_argument("--evidently", action="store_true", help="include Evidently in --quick")
    parser.add_argument("--no-preset", action="store_true", help="skip DataDriftPreset")
    parser.add_argument(
        "--evidently-python",
        default=os.environ.get("DRIFT_BENCH_EVIDENTLY_PYTHON"),
        help="interpreter with evidently installed (default: this one)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    # Internal: one measurement in this process.
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        measured = WORKERS[args.worker](args.data, args.threads)
        args.result.write_text(json.dumps(measured))
        return
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped (make bench | tee): do not squeeze the tables
        console = Console(width=max(console.width, 160))
    result = run(args, console)
    print_report(console, result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"results written to {args.output} ({result['wall_seconds']} s)")


if __name__ == "__main__":
    main()
