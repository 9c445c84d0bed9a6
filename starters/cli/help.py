"""Readable value placeholders in `--help`: `TEXT`, `INTEGER`, `KEY=VALUE ...` and nothing for
flags, where Typer would print Python annotations (`<list[str]>`, `<bool>`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, get_args

# Typer >= 0.20 vendors its own click, whose classes are not the `click` package's: commands and
# parameters are typed `Any` here and told apart by click's documented attributes.
Command = Any
Parameter = Any

_NAMES: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "NUMBER", bool: "BOOLEAN"}


def _commands(command: Command) -> Iterator[Command]:
    yield command
    # Typer's groups are not click.Group subclasses: ask for their commands by attribute.
    children: dict[str, Command] = getattr(command, "commands", None) or {}
    for sub in children.values():
        yield from _commands(sub)


def _choice(values: Any) -> str:
    return "[" + "|".join(str(getattr(v, "value", v)) for v in values) + "]"


def _type_text(param: Parameter) -> str:
    # Typer >= 0.20 describes a parameter's type by its annotation; older ones by click types.
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None:
        kind = param.type
        if hasattr(kind, "choices"):
            return _choice(kind.choices)
        return str(kind.name).upper()
    if descriptor.choices is not None:
        return _choice(descriptor.choices)
    annotation = descriptor.annotation
    if descriptor.is_list and get_args(annotation):
        annotation = get_args(annotation)[0]
    if annotation is datetime:
        return "DATETIME"
    if descriptor.is_path or annotation is Path:
        return "PATH"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return _choice(list(annotation))
    return _NAMES.get(annotation, "VALUE")


def _is_option(param: Parameter) -> bool:
    # Typer's options are not click.Option subclasses either.
    return bool(param.param_type_name == "option")


def _is_flag(param: Parameter) -> bool:
    return _is_option(param) and bool(
        getattr(param, "is_flag", False) or getattr(param, "count", False)
    )


def placeholder(param: Parameter) -> str:
    """What a value of `param` looks like: an option's metavar if it names one, else the
    type; nothing for a flag. An argument's metavar is its name, already shown beside it."""
    if _is_flag(param):
        return ""
    named = param.metavar if _is_option(param) else None
    text = named or _type_text(param)
    descriptor = getattr(param, "type_descriptor", None)
    repeated = (
        (_is_option(param) and bool(getattr(param, "multiple", False)))
        or param.nargs == -1
        or bool(descriptor is not None and descriptor.is_list)
    )
    return f"{text} ..." if repeated else text


def _show(param: Parameter, shown: str) -> None:
    if _is_option(param):
        param.metavar = shown
    # Typer's help prints the type beside the name from this method, whatever the metavar.
    param.display_type_rich = lambda ctx: shown


def _help_option_without_type(command: Command) -> None:
    make = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = make(ctx)
        if option is not None:
            _show(option, "")
        return option

    command.get_help_option = help_option


def readable_placeholders(root: Command) -> Command:
    """Give every parameter of every command a readable placeholder (in place)."""
    for command in _commands(root):
        for param in command.params:
            _show(param, placeholder(param))
        _help_option_without_type(command)
    return root
