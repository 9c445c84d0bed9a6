"""The alert rules under promtool's own unit tests (ops/prometheus/tests/alerts_test.yml): each
alert fires on a first occurrence and stays silent in steady state.

`make test` installs promtool (Debian's `prometheus` package) when it is missing and sets
RETRAIN_REQUIRE_PROMTOOL, so there these tests cannot be skipped; elsewhere they run when
promtool is on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
RULE_TESTS = PROMETHEUS_DIR / "tests" / "alerts_test.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("RETRAIN_REQUIRE_PROMTOOL"):
            pytest.fail("promtool is required here (make test installs Debian's prometheus)")
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return found


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def test_every_alert_has_unit_tests_that_fire_it_and_keep_it_silent() -> None:
    alerts = {
        rule["alert"]
        for group in _load(PROMETHEUS_DIR / "alerts.yml")["groups"]
        for rule in group["rules"]
    }
    fired: set[str] = set()
    silent: set[str] = set()
    for case in _load(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    assert alerts == fired, f"alerts never shown firing: {alerts - fired}"
    assert alerts == silent, f"alerts never shown silent: {alerts - silent}"


def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
