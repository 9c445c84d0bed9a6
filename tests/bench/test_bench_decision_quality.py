"""The decision-quality benchmark: its oracle is optimal, its quick grid runs end to end and
writes its table, and an external Parquet stream goes through unchanged (bad ones are refused
with a clear error). Times are never asserted."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pytest

from bench.decision_quality.__main__ import main
from bench.decision_quality.matrix import Case, oracle, schedule_cost
from bench.decision_quality.scoring import POLICIES

ROOT = Path(__file__).resolve().parents[2]


def _random_case(seed: int, batches: int = 9, window: int = 2) -> Case:
    rng = random.Random(seed)
    errors = [
        [rng.randrange(0, 50) if window - 1 <= i < j else -1 for j in range(batches)]
        for i in range(batches)
    ]
    return Case(stream="random", seed=seed, window=window, counts=[50] * batches, errors=errors)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("cost", [0.0, 7.0, 40.0])
def test_the_oracle_is_the_cheapest_schedule(seed: int, cost: float) -> None:
    case = _random_case(seed)
    decisions = range(case.window, case.batches - 1)
    brute = min(
        schedule_cost(case, list(chosen), cost)[0]
        for size in range(len(decisions) + 1)
        for chosen in itertools.combinations(decisions, size)
    )
    best, plan = oracle(case, cost)
    assert best == brute
    assert schedule_cost(case, plan, cost)[0] == best


def test_quick_grid_runs_and_writes_its_table(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.decision_quality",
            "--quick",
            "--jobs",
            "1",
            "--output-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "decision_quality.json").read_text())
    table = (tmp_path / "decision_quality.md").read_text()
    assert "Reported seeds" in proc.stdout and "Tuning seeds" in proc.stdout
    assert "| adaptive (workflows.coordinator.adaptive) |" in table
    assert result["config"]["quick"] is True
    assert result["config"]["reported_seeds"] == [0] and result["config"]["tuning_seeds"] == [100]
    for group in ("reported", "tuning"):
        data = result[group]
        assert set(data["summary"]) == set(POLICIES)
        assert set(data["targets"]) == {
            "drifting_geometric_mean",
            "worst_cell",
            "stationary_geometric_mean",
            "better_than_best_period",
            "fewer_retrainings_when_dearer",
        }
        assert {(c["stream"], c["factor"]) for c in data["cells"]} == {
            (stream, factor)
            for stream in ("sea_abrupt", "stationary")
            for factor in (0.05, 0.25, 1.0)
        }
        for cell in data["cells"]:
            # Nothing beats the oracle; every batch costs the most retrainings.
            assert all(ratio >= 1 - 1e-9 for ratio in cell["ratios"].values()), cell
            assert cell["retrains"]["every_batch"] >= max(cell["retrains"].values())
    # The matrices were cached: a second run replays the policies on the same numbers.
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(cached) == 4


def _stream_frame(rows: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    flipped = np.arange(rows) >= rows // 2  # the concept flips half way
    signal = np.where(flipped, -x, x) + (colour == "red")
    label = np.where(rng.random(rows) < 1 / (1 + np.exp(-3 * signal)), "yes", "no")
    start = datetime(2024, 3, 1, tzinfo=UTC)
    stamps = [start + timedelta(hours=h) for h in range(rows)]
    frame = pd.DataFrame(
        {"at": stamps, "x": x, "noise": rng.normal(size=rows), "colour": colour, "y": label}
    )
    return frame.sample(frac=1.0, random_state=seed)  # out of order: the loader sorts by time


def test_an_external_parquet_stream_goes_through_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "stream.parquet"
    _stream_frame().to_parquet(path)
    out = tmp_path / "out"
    code = main(
        [
            "--stream",
            str(path),
            "--label",
            "y",
            "--time",
            "at",
            "--batch-size",
            "150",
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "decision_quality.json").read_text())
    external = result["external"]
    assert result["config"]["stream"] == "stream.parquet"
    assert {c["factor"] for c in external["cells"]} == {0.05, 0.25, 1.0}
    for cell in external["cells"]:
        assert all(ratio >= 1 - 1e-9 for ratio in cell["ratios"].values())
        # The concept flips half way: keeping the first model forever is visibly worse.
        assert cell["ratios"]["never"] > 1.2
    assert (
        "3000 rows, 3 features, 2 classes, 20 batches" in (out / "decision_quality.md").read_text()
    )

    # Calendar batches work too (a day of hourly rows each).
    assert (
        main(
            [
                "--stream",
                str(path),
                "--label",
                "y",
                "--time",
                "at",
                "--period",
                "1D",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    assert "125 batches" in (out / "decision_quality.md").read_text()


@pytest.mark.parametrize(
    ("change", "arguments", "message"),
    [
        ("none", ["--label", "target"], "no label column 'target'"),
        ("none", ["--time", "when"], "no time column 'when'"),
        ("no_labels", [], "holds no labels"),
        ("some_unlabelled", [], "rows have no label"),
        ("bad_time", [], "is not a timestamp"),
        ("missing_time", [], "rows have no timestamp"),
        ("one_class", [], "has a single class"),
        ("none", ["--features", "x,height"], "no feature column(s) height"),
        ("short", [], "batches; at least 7 are needed"),
    ],
)
def test_bad_streams_are_refused_with_a_clear_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: str,
    arguments: list[str],
    message: str,
) -> None:
    frame = _stream_frame(600)
    if change == "no_labels":
        frame["y"] = None
    elif change == "some_unlabelled":
        frame.loc[frame.index[:5], "y"] = None
    elif change == "bad_time":
        frame["at"] = "soon"
    elif change == "missing_time":
        frame["at"] = frame["at"].astype(object)
        frame.loc[frame.index[:3], "at"] = None
    elif change == "one_class":
        frame["y"] = "yes"
    elif change == "short":
        frame = frame.head(500)
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path)
    options = {"--label": "y", "--time": "at", "--batch-size": "100"}
    for flag, value in zip(arguments[::2], arguments[1::2], strict=True):
        options[flag] = value
    argv = ["--stream", str(path), "--output-dir", str(tmp_path / "out")]
    argv += [item for pair in options.items() for item in pair]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "decision_quality.json").exists()


def test_a_stream_option_without_label_or_time_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.parquet"
    _stream_frame(600).to_parquet(path)
    assert main(["--stream", str(path), "--label", "y", "--output-dir", str(tmp_path)]) == 2
    assert "--stream needs --label COL and --time COL" in capsys.readouterr().err
