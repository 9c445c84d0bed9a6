"""The contract between workflows and activities holds: the names workflows call are the names
the worker registers, and every error type a retry policy names is raised by some activity."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import cast

from temporalio import activity
from temporalio.client import Client

from activities.backends import CloudConnections
from workers.worker import all_activities
from workflows.common.errors import ErrorType
from workflows.common.names import ActivityName

ROOT = Path(__file__).resolve().parents[2]


def constants(namespace: type) -> dict[str, str]:
    return {name: value for name, value in vars(namespace).items() if name.isupper()}


def attribute_names(node: ast.AST, owner: str) -> set[str]:
    """`Owner.NAME` references anywhere under `node`."""
    return {
        found.attr
        for found in ast.walk(node)
        if isinstance(found, ast.Attribute)
        and isinstance(found.value, ast.Name)
        and found.value.id == owner
    }


def modules(layer: str) -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted((ROOT / layer).rglob("*.py"))]


def called_activities() -> dict[str, list[str]]:
    """Every `ActivityName.X` a workflow module uses (directly in `execute_activity` or through a
    helper that takes the name), by constant; and no activity is called by a string literal."""
    calls: dict[str, list[str]] = {}
    for path, tree in modules("workflows"):
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("execute_activity", "start_activity")
            ):
                assert not isinstance(node.args[0], ast.Constant), (
                    f"{where}: call activities by an ActivityName constant"
                )
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "ActivityName"
            ):
                calls.setdefault(node.attr, []).append(where)
    return calls


def registered_activities(home: Path) -> set[str]:
    # Building the activities only stores the client: nothing is called on it here. (It does
    # open the local stores under `home`, so a temporary one, never the checkout.)
    defined = all_activities(cast(Client, None), home, CloudConnections())
    names = set()
    for function in defined:
        definition = activity._Definition.from_callable(function)
        assert definition is not None and definition.name is not None
        names.add(definition.name)
    return names


def test_every_activity_a_workflow_calls_is_registered_by_the_worker(tmp_path: Path) -> None:
    names = constants(ActivityName)
    called = called_activities()
    assert set(called) <= set(names), "unknown ActivityName constants"
    registered = registered_activities(tmp_path)
    missing = {
        names[attr]: where for attr, where in called.items() if names[attr] not in registered
    }
    assert not missing, f"called but not registered by the worker: {missing}"
    # And nothing is registered under a name the contract does not list.
    assert registered <= set(names.values())


def test_every_error_type_a_retry_policy_names_is_raised_by_an_activity() -> None:
    named: set[str] = set()
    for _, tree in modules("workflows"):
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "non_retryable_error_types":
                named |= attribute_names(node.value, "ErrorType")
    raised: set[str] = set()
    for _, tree in modules("activities"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ApplicationError":
                for keyword in node.keywords:
                    if keyword.arg == "type":
                        raised |= attribute_names(keyword.value, "ErrorType")
    assert named, "no retry policy names an error type: the scan is broken"
    assert named <= set(constants(ErrorType))
    assert not named - raised, f"named in retry policies, raised by no activity: {named - raised}"


def test_error_types_are_distinct() -> None:
    values = list(constants(ErrorType).values())
    assert len(values) == len(set(values))
