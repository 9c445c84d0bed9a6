"""The drift benchmark runs end to end in its tiny `--quick` mode (so it cannot rot) and our
statistics agree with scipy's on its data. Times are never asserted: the machine is shared."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_runs_and_agrees_with_scipy(tmp_path: Path) -> None:
    output = tmp_path / "drift_suite.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.drift_suite", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(output.read_text())

    assert result["config"]["quick"] is True
    assert result["config"]["implementations"] == ["ours", "scipy"]
    assert result["config"]["evidently"]["available"] is False  # skipped without --evidently
    ratios = result["summary"]["ratios_median"]
    assert set(ratios) == {"scipy/ours", "evidently/ours", "evidently_preset/ours"}
    assert ratios["scipy/ours"] > 0 and ratios["evidently/ours"] is None
    assert set(result["summary"]["met"]) == {"evidently/ours", "scipy/ours", "peak_memory"}
    (round_,) = result["rounds"]
    assert set(round_["measurements"]) == {"ours", "scipy"}
    assert set(round_["ratios"]) == {"scipy"}
    for measured in round_["measurements"].values():
        assert measured["seconds"] > 0
        assert {"baseline_hwm_mb", "peak_hwm_mb", "increase_mb"} <= set(measured)
    assert result["reference_build"]["seconds"] > 0

    agreement = result["agreement"]
    assert set(agreement) == {
        "ks_statistic",
        "ks_pvalue",
        "wasserstein_relative",
        "psi",
        "js",
        "chi2",
        "chi2_pvalue",
        "chi2_dof",
    }
    for name, error in agreement.items():
        assert math.isfinite(error) and error < 1e-9, (name, error)

    statistics = result["ours_statistics"]
    assert len(statistics["numeric"]) == 4 and len(statistics["categorical"]) == 2
    shifted = {s["name"]: s for s in statistics["categorical"]}["plan_shifted"]
    assert shifted["chi2_pvalue"] < 1e-3  # the one shifted categorical feature is detected
