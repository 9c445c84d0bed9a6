"""Which model an event is for, from the registered specs (pure matching plus a cached index).

In this order:
1. a model named by the request (`?model=`) or by the payload (Alertmanager label `model`),
   which must be registered (a typo is dead-lettered with the closest registered name, never
   delivered to a phantom `coordinator-<typo>`);
2. the object's uri under a spec's `data.labelled` prefix (the longest prefix wins);
3. a platform monitoring job of the spec's backend settings (`vertex.monitoring_job`: the full
   resource name or its id);
4. the endpoint equal to the `endpoint_name` of the spec's backend settings.

Two models matching equally well, or none, leave the event unrouted with the reason: it goes to
the dead-letter store, and `retrain dlq replay` routes it again (after `retrain models
register`, say).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from activities.specs import SpecError, SpecStore
from starters.api.known_models import UnknownModel
from starters.events.mapped import MappedEvent
from workflows.common.names import validate_model_name
from workflows.spec.models import ModelSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteKeys:
    """What an event can be routed by; kept with a dead letter to route it again on replay."""

    uri: str | None = None
    endpoint: str | None = None
    alarm: str | None = None
    monitoring_job: str | None = None
    model: str | None = None

    @classmethod
    def of(cls, mapped: MappedEvent, model: str | None = None) -> RouteKeys:
        return cls(mapped.uri, mapped.endpoint, mapped.alarm, mapped.monitoring_job, model)

    def as_dict(self) -> dict[str, str]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    def describe(self) -> str:
        keys = {k: v for k, v in self.as_dict().items() if k != "model"}
        return ", ".join(f"{key}={value!r}" for key, value in keys.items()) or "nothing to match"


@dataclass(frozen=True)
class Route:
    model: str | None
    reason: str | None = None


def _tail(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def _under(uri: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return bool(prefix) and (uri == prefix or uri.startswith(prefix + "/"))


def _unique(models: Iterable[str], what: str) -> Route | None:
    found = sorted(set(models))
    if not found:
        return None
    if len(found) > 1:
        return Route(None, f"{what} matches several registered models: {', '.join(found)}")
    return Route(found[0])


class SpecIndex:
    """The registered specs' routing keys."""

    def __init__(self, specs: Iterable[ModelSpec], names: Iterable[str] = ()) -> None:
        """`names`: every registered model, including any whose spec does not load now (it
        cannot be routed to by its keys, but naming it is no typo)."""
        self.labelled: list[tuple[str, str]] = []
        self.names: set[str] = set(names)
        self.endpoints: dict[str, set[str]] = {}
        self.monitoring_jobs: list[tuple[str, str]] = []
        for spec in specs:
            self.names.add(spec.name)
            self.labelled.append((spec.data.labelled, spec.name))
            settings = spec.backend_settings
            if settings is not None:
                self.endpoints.setdefault(settings.endpoint_name, set()).add(spec.name)
                self.monitoring_jobs += [(job, spec.name) for job in settings.monitoring_jobs()]

    def route(self, keys: RouteKeys) -> Route:
        if keys.model is not None:
            try:
                model = validate_model_name(keys.model)
            except ValueError as err:
                return Route(None, str(err))
            if model not in self.names:
                return Route(None, str(UnknownModel(model, self.names)))
            return Route(model)
        if keys.uri is not None:
            matching = [(len(p.rstrip("/")), m) for p, m in self.labelled if _under(keys.uri, p)]
            if matching:
                longest = max(length for length, _ in matching)
                found = _unique((m for n, m in matching if n == longest), f"uri {keys.uri!r}")
                if found is not None:
                    return found
        if keys.monitoring_job is not None:
            job = keys.monitoring_job
            found = _unique(
                (m for name, m in self.monitoring_jobs if name == job or _tail(name) == _tail(job)),
                f"monitoring job {job!r}",
            )
            if found is not None:
                return found
        if keys.endpoint is not None:
            endpoint = keys.endpoint
            models = self.endpoints.get(endpoint, set()) | self.endpoints.get(
                _tail(endpoint), set()
            )
            found = _unique(models, f"endpoint {endpoint!r}")
            if found is not None:
                return found
        return Route(
            None,
            f"no registered model matches {keys.describe()}: register a spec whose data.labelled,"
            " endpoint_name or monitoring_job matches, or name the model with ?model=",
        )


class SpecRouter:
    """Routes against `<home>/models`, re-reading the specs only when that directory changes
    (registering a spec replaces a file in it, which changes its modification time)."""

    def __init__(self, home: Path) -> None:
        self.store = SpecStore(home)
        self._stamp: int | None = None
        self._index = SpecIndex([])

    def _current_stamp(self) -> int | None:
        try:
            return self.store.directory.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def index(self) -> SpecIndex:
        stamp = self._current_stamp()
        if stamp is None or stamp != self._stamp:
            specs = []
            for name in self.store.names():
                try:
                    spec = self.store.get(name)
                except (SpecError, ValueError) as err:
                    logger.warning("routing ignores the spec of %s: %s", name, err)
                    continue
                if spec is not None:
                    specs.append(spec)
            self._index, self._stamp = SpecIndex(specs, self.store.names()), stamp
        return self._index

    def route(self, keys: RouteKeys) -> Route:
        return self.index().route(keys)
