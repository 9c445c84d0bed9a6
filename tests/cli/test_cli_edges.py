"""What a newcomer meets first, without a server: `--version`, readable help, spec files
validated and listed problem by problem, the spec's JSON Schema, and unknown models refused
(exit 2, with the closest registered name) before anything reaches Temporal."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import typer.testing
from temporalio.client import Client
from typer.testing import CliRunner

from activities.specs import SpecStore, read_spec_file
from starters.api.coordinators import CoordinatorNotFound, Coordinators
from starters.api.known_models import UnknownModel, did_you_mean
from starters.cli.app import app, cli_command
from tests.support.gateway_harness import register_sagemaker_model
from workflows.coordinator.triggers import TriggerEvent
from workflows.spec.schema import spec_json_schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """The real `retrain` command tree (with its readable help) against a fresh home."""
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: cli_command())
    monkeypatch.setenv("RETRAIN_HOME", str(tmp_path / "home"))
    # Nothing listens here: a command that reached Temporal would fail differently.
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:9")
    monkeypatch.setenv("COLUMNS", "160")
    return CliRunner()


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in (getattr(command, "commands", None) or {}).items():
        found += _commands(sub, (*path, name))
    return found


def test_version(runner: CliRunner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(
        r"retrain \d+\.\d+\.\d+\S* \(temporalio \d+\.\d+\.\d+\S*\)\n", result.output
    )


def test_help_shows_readable_placeholders_everywhere(runner: CliRunner):
    paths = _commands(cli_command())
    assert ("models", "schema") in paths and ("trigger",) in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        # Typer's raw annotations: `<str>`, `<list[str]>`, `<bool>`, `<int>`, ...
        assert not re.search(r"<[a-z][\w\[\], |]*>", result.output), (path, result.output)
    trigger = runner.invoke(app, ["trigger", "--help"]).output
    assert "KEY=VALUE ..." in trigger and "[low|medium|high|critical]" in trigger
    assert re.search(r"--json\s+Print JSON", trigger)


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*/*.*")), ids=lambda p: p.name)
def test_models_validate_accepts_each_example(runner: CliRunner, example: Path):
    result = runner.invoke(app, ["models", "validate", str(example)])
    assert result.exit_code == 0, result.output
    assert f"valid: model {read_spec_file(example).name}" in result.output


def test_models_validate_lists_one_problem_per_line(runner: CliRunner, tmp_path: Path):
    spec = tmp_path / "churn.yaml"
    spec.write_text("name: churn\nlabel: y\nfeatures: []\ndata: {labelled: x}\n")
    # Narrower than the temporary path: the headline stays one line (errors are not wrapped).
    result = runner.invoke(app, ["models", "validate", str(spec)], env={"COLUMNS": "40"})
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0].endswith("churn.yaml: invalid model spec (3 problems):")
    assert lines[1:] == [
        "  - features: List should have at least 1 item after validation, not 0",
        "  - data.baseline_holdout: Field required",
        "  - data.golden_set: Field required",
    ]


def test_models_schema_prints_the_published_schema(runner: CliRunner, tmp_path: Path):
    result = runner.invoke(app, ["models", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.output) == spec_json_schema()
    target = tmp_path / "schema.json"
    assert runner.invoke(app, ["models", "schema", "-o", str(target)]).exit_code == 0
    assert json.loads(target.read_text()) == spec_json_schema()


def test_commands_that_start_things_refuse_an_unregistered_model(runner: CliRunner, tmp_path: Path):
    register_sagemaker_model(tmp_path / "home", "churn", "s3://churn-data/labelled")
    for args in (
        ["trigger", "chrun", "--kind", "manual"],
        ["pause", "chrun"],
        ["policy", "set", "chrun", "cooldown=2h"],
        ["schedule", "set", "chrun", "--every", "6h"],
        ["drift", "check", "chrun"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        flat = " ".join(result.output.split())
        assert "model 'chrun' is not registered: did you mean 'churn'?" in flat, flat
    nothing = runner.invoke(app, ["trigger", "fraud", "--kind", "manual"])
    assert nothing.exit_code == 2
    assert "register its spec first with `retrain models register FILE`" in " ".join(
        nothing.output.split()
    )


def test_did_you_mean_only_suggests_a_close_name():
    registered = ["churn", "credit-risk", "fraud"]
    assert did_you_mean("chrun", registered) == "churn"
    assert did_you_mean("credit_risk", registered) == "credit-risk"
    assert did_you_mean("forecast", registered) is None
    assert did_you_mean("churn", []) is None


class NoCalls:
    """A client that fails the test if anything is sent through it."""

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            pytest.fail(f"client.{name} was called")

        return call


async def test_the_client_library_refuses_an_unregistered_model_before_any_call(
    tmp_path: Path,
):
    register_sagemaker_model(tmp_path, "churn", "s3://churn-data/labelled")
    coordinators = Coordinators(cast(Client, NoCalls()), models=SpecStore(tmp_path))
    event = TriggerEvent(kind="manual", event_id="e-1")
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "trigger": lambda: coordinators.trigger("chrun", event),
        "send_trigger": lambda: coordinators.send_trigger("chrun", event),
        "send_triggers": lambda: coordinators.send_triggers("chrun", [event]),
        "start": lambda: coordinators.start("chrun"),
        "pause": lambda: coordinators.pause("chrun"),
        "set_policy": lambda: coordinators.set_policy("chrun", {"cooldown": "2h"}),
    }
    for name, call in calls.items():
        with pytest.raises(UnknownModel, match="did you mean 'churn'"):
            await call()
            pytest.fail(f"{name} accepted an unregistered model")


async def test_the_default_check_reads_retrain_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("RETRAIN_HOME", str(tmp_path))
    coordinators = Coordinators(cast(Client, NoCalls()))
    with pytest.raises(UnknownModel, match="register its spec first"):
        await coordinators.trigger("churn", TriggerEvent(kind="manual", event_id="e-1"))


async def test_a_missing_coordinator_is_explained(client: Client, task_queue: str, tmp_path: Path):
    register_sagemaker_model(tmp_path, "churn", "s3://churn-data/labelled")
    coordinators = Coordinators(client, task_queue, models=SpecStore(tmp_path))
    with pytest.raises(UnknownModel, match=r"'chrun' is not registered .*did you mean 'churn'"):
        await coordinators.status("chrun")
    # Registered, never triggered: not Temporal's "workflow not found for ID".
    with pytest.raises(CoordinatorNotFound, match="no running coordinator yet"):
        await coordinators.decisions("churn")
