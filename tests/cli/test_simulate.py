"""`retrain simulate SPEC STREAM`: a labelled Parquet stream replayed through the spec's adaptive
policy and coordinator rules (no server); its table, costs and HTML plot, and its bad inputs
(a stream without labels or timestamps, a spec that is not adaptive or says an error costs a
negative amount): clear errors, exit code 2, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

from starters.demo.synthetic import generate_rows, synthetic_spec

RETRAIN = str(Path(sysconfig.get_path("scripts")) / "retrain")
ADAPTIVE = {"cost": {"currency": "EUR", "hourly_rate": 10.0}, "adaptive": {"value_per_error": 0.5}}


def retrain(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([RETRAIN, *args], env=env, capture_output=True, text=True, timeout=300)


def write_stream(path: Path, days: int = 60, change: int = 30) -> Path:
    parts = []
    for offset in range(days):
        day = date(2025, 1, 1) + timedelta(days=offset)
        parts.append(generate_rows(day, 150, function=0 if offset < change else 2, seed=2))
    pq.write_table(pa.concat_tables(parts), path)
    return path


def write_spec(path: Path, trigger_policy: dict[str, Any] | None = ADAPTIVE) -> Path:
    spec = synthetic_spec("credit").model_dump(mode="json", exclude={"trigger_policy"})
    if trigger_policy is not None:
        spec["trigger_policy"] = trigger_policy
    path.write_text(json.dumps(spec))
    return path


def test_a_stream_is_replayed_with_its_decisions_costs_and_plot(tmp_path: Path) -> None:
    stream = write_stream(tmp_path / "stream.parquet")
    spec = write_spec(tmp_path / "credit.json")
    page = tmp_path / "plot.html"
    result = retrain("simulate", str(spec), str(stream), "--html", str(page))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "an error costs 0.5 EUR, a retraining 10 EUR" in out
    assert "retrain v1: excess loss since v1:" in out and ">= retraining cost 10 EUR" in out
    for policy in ("adaptive", "oracle", "never", "every_batch", "best_period"):
        assert policy in out
    assert "decisions in" in out and f"plot: {page}" in out
    text = page.read_text()
    assert text.startswith("<!doctype html>") and "<svg" in text and "<script" not in text

    as_json = retrain("simulate", str(spec), str(stream), "--json", "--html", str(page))
    report = json.loads(as_json.stdout)
    costs = {c["name"]: c for c in report["costs"]}
    assert costs["oracle"]["ratio"] == 1.0
    assert costs["adaptive"]["retrainings"] >= 1
    assert costs["adaptive"]["cost"] < costs["never"]["cost"]


def test_a_rules_spec_is_simulated_with_a_value_per_error(tmp_path: Path) -> None:
    stream = write_stream(tmp_path / "stream.parquet")
    spec = write_spec(tmp_path / "rules.json", trigger_policy=None)
    refused = retrain("simulate", str(spec), str(stream))
    assert refused.returncode == 2 and "give --value-per-error" in refused.stderr
    ok = retrain("simulate", str(spec), str(stream), "--value-per-error", "2")
    assert ok.returncode == 0, ok.stderr
    assert "an error costs 2 EUR" not in ok.stdout and "an error costs 2 USD" in ok.stdout
    negative = retrain("simulate", str(spec), str(stream), "--value-per-error", "-1")
    assert negative.returncode == 2 and "value_per_error must be positive" in negative.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["label"]), "no label column 'label'"),
        (lambda t: t.drop_columns(["event_time"]), "no time column 'event_time'"),
        (
            lambda t: t.set_column(
                t.schema.get_field_index("label"),
                "label",
                pa.array([None] * t.num_rows, pa.int64()),
            ),
            "holds no labels",
        ),
        (
            lambda t: t.set_column(
                t.schema.get_field_index("event_time"),
                "event_time",
                pa.array(["not a time"] * t.num_rows),
            ),
            "is not a timestamp",
        ),
    ],
)
def test_a_stream_without_labels_or_timestamps_is_refused(
    tmp_path: Path, change: Any, message: str
) -> None:
    good = pq.read_table(write_stream(tmp_path / "good.parquet", days=10))
    bad = tmp_path / "bad.parquet"
    pq.write_table(change(good), bad)
    result = retrain("simulate", str(write_spec(tmp_path / "credit.json")), str(bad))
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert not bad.with_suffix(".simulation.html").exists()


def test_a_spec_with_a_negative_value_per_error_is_refused(tmp_path: Path) -> None:
    stream = write_stream(tmp_path / "stream.parquet", days=10)
    policy = {"cost": {"hourly_rate": 10.0}, "adaptive": {"value_per_error": -0.5}}
    spec = write_spec(tmp_path / "credit.json", trigger_policy=policy)
    result = retrain("simulate", str(spec), str(stream))
    assert result.returncode == 2 and "value_per_error must be positive" in result.stderr
    missing_rate = {"cost": {"hourly_rate": 0.0}, "adaptive": {"value_per_error": 0.5}}
    spec = write_spec(tmp_path / "free.json", trigger_policy=missing_rate)
    result = retrain("simulate", str(spec), str(stream))
    assert result.returncode == 2 and "the cost model has no rate" in " ".join(
        result.stderr.split()
    )
