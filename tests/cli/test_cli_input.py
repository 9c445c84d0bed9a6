"""What a person can type at `retrain` is refused in one line, never with a traceback: spec files
that are not UTF-8 or nest too deeply, absurd durations, metadata values beyond any sense.

In process (typer's runner): these refusals happen before any connection to Temporal."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from activities.specs import SpecStore
from starters.cli.app import app
from tests.support.loop_harness import write_dataset

runner = CliRunner()


def invoke(*args: str, home: Path) -> Result:
    # An address nothing listens on: whatever got past validation could not reach a server.
    env = {"RETRAIN_HOME": str(home), "COLUMNS": "200", "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    return runner.invoke(app, list(args), env=env)


def refused(result: Result, code: int = 2) -> str:
    """The one-line message of a clean refusal (no traceback, the given exit code)."""
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def registered(home: Path, model: str = "churn") -> Path:
    """A home where `model` is registered: the commands that start something refuse unknown
    models first (with a did-you-mean), before the values checked here."""
    SpecStore(home).register(write_dataset(home, model, date(2026, 3, 1)))
    return home


def valid_spec(home: Path) -> dict[str, object]:
    spec = write_dataset(home, "cli-input", date(2026, 3, 1))
    loaded: dict[str, object] = json.loads(spec.model_dump_json())
    return loaded


def test_a_spec_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    spec_file = tmp_path / "latin1.json"
    spec_file.write_bytes(b'{"name": "caf\xe9"}')
    output = refused(invoke("models", "validate", str(spec_file), home=tmp_path))
    assert "is not UTF-8 text" in output


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        (".json", "[" * 100_000 + "]" * 100_000),
        (".json", "[" * 100 + "]" * 100),
        (".json", '{"name": ' + "9" * 5000 + "}"),
        (".json", '{"name": "\\ud800"}'),
    ],
    ids=["deep beyond recursion", "deep beyond our limit", "5000 digits", "lone surrogate"],
)
def test_json_the_parser_refuses_is_a_one_line_error(
    tmp_path: Path, suffix: str, text: str
) -> None:
    spec_file = tmp_path / f"spec{suffix}"
    spec_file.write_text(text)
    output = refused(invoke("models", "validate", str(spec_file), home=tmp_path))
    assert "is not valid JSON" in output


@pytest.mark.parametrize("timeout", ["3000000d", "99999999999d", "P99999999999D", 10**20])
def test_absurd_durations_in_a_spec_are_refused(tmp_path: Path, timeout: object) -> None:
    """An approval timeout no date can hold is refused at validation, not at the gate."""
    spec = valid_spec(tmp_path)
    spec["loop"] = {"approval": {"timeout": timeout}}
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    output = refused(invoke("models", "validate", str(spec_file), home=tmp_path))
    assert "loop.approval.timeout" in output


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("7" * 5000, "digits"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("[" * 100 + "]" * 100, "nested too deeply"),
    ],
    ids=["5000 digits", "deep beyond recursion", "deep beyond our limit"],
)
def test_metadata_values_beyond_reason_are_refused(
    tmp_path: Path, value: str, message: str
) -> None:
    home = registered(tmp_path)
    result = invoke("trigger", "churn", "--kind", "manual", "-m", f"k={value}", home=home)
    assert message in refused(result)


def test_metadata_text_that_is_not_json_stays_text(tmp_path: Path) -> None:
    """`-m note=hello` is the text "hello": refused later only for want of a server."""
    home = registered(tmp_path)
    result = invoke("trigger", "churn", "--kind", "manual", "-m", "note=hello", home=home)
    assert "cannot reach Temporal" in refused(result, code=1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("cooldown=99999999999d", "too long"),
        ("cooldown=٣h", "ASCII digits"),
        ("batch_size=" + "9" * 5000, "digits"),
    ],
)
def test_policy_values_are_refused_before_anything_is_sent(
    tmp_path: Path, change: str, message: str
) -> None:
    home = registered(tmp_path)
    assert message in refused(invoke("policy", "set", "churn", change, home=home))
