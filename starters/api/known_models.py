"""Which models exist: the registered specs, checked at every edge before anything starts.

A trigger for a model nobody registered would start a coordinator (`coordinator-<typo>`) whose
first loop fails with `UnknownModel` after using a training of the day and starting a cooldown.
The CLI, the gateway and the client library (`Coordinators`, `DriftMonitors`, `Schedules`) ask
`require_known` first and refuse such a name with the closest registered one, if any.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from activities.specs import SpecStore
from starters.api.connection import retrain_home


class KnownModels(Protocol):
    """Anything that lists the registered model names (`SpecStore` does)."""

    def names(self) -> list[str]: ...


class UnknownModel(LookupError):
    """A model name that no registered spec carries; the message says what to do."""

    def __init__(self, model: str, registered: Iterable[str], what: str = "") -> None:
        self.model = model
        self.suggestion = did_you_mean(model, registered)
        message = f"model {model!r} is not registered"
        if what:
            message += f" ({what})"
        if self.suggestion is not None:
            message += f": did you mean {self.suggestion!r}?"
        else:
            message += ": register its spec first with `retrain models register FILE`"
        super().__init__(message)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate when one is close enough to be a typo of `name`."""
    pool = sorted(set(candidates))
    matches = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    return matches[0] if matches else None


def registered_models(home: Path | None = None) -> SpecStore:
    """The specs registered under the retrain home (`$RETRAIN_HOME`, default `.retrain`)."""
    return SpecStore(home if home is not None else retrain_home())


class RegisteredModels:
    """The default check of the client library: the specs under `$RETRAIN_HOME` as they are at
    each call (the variable and the directory may change during a process's life)."""

    def names(self) -> list[str]:
        return registered_models().names()


def require_known(models: KnownModels | None, model: str) -> None:
    """Raise `UnknownModel` unless `model` is registered; `None` checks nothing (tests,
    benchmarks, and senders that routed the event themselves)."""
    if models is None:
        return
    known = models.names()
    if model not in known:
        raise UnknownModel(model, known)
