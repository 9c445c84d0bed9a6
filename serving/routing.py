"""The endpoint's live weights and shadow variant: validation, persistence, idempotency.

The current split is one immutable `Routing` that a change replaces whole, so a request reads
one consistent generation (weights, variants and the generation it stamps on its capture row)
however changes interleave. Changes apply one at a time: every variant they need is loaded
first, then the new state is written to `<home>/endpoints/<model>/state.json` (temporary file,
fsync, rename), and only then swapped in. A change id already applied returns the current
state unchanged, so a retried rollout activity never shifts traffic twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import anyio.to_thread
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from serving.schemas import WeightsBody
from serving.variants import Variant, VariantLoader
from workflows.rollout.models import EndpointState

# Change ids remembered for idempotency (a rollout makes a handful per stage).
APPLIED_CHANGE_IDS = 1000
INITIAL_CHANGE = "initial"
_T = TypeVar("_T")


class StateError(Exception):
    """The persisted state cannot be read or written."""


class PersistedState(BaseModel):
    """The state file's content."""

    model_config = ConfigDict(extra="forbid")

    model: str
    weights: dict[str, int]
    shadow: str | None = None
    generation: int
    change_id: str | None = None
    updated_at: AwareDatetime
    applied_change_ids: list[str] = []


@dataclass(frozen=True)
class Routing:
    """One generation of the endpoint's traffic split, with its loaded variants."""

    model: str
    generation: int
    updated_at: datetime
    # Live variants (weight > 0) in name order, and their weights.
    live: dict[str, Variant] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    shadow: Variant | None = None
    change_id: str | None = None
    applied: tuple[str, ...] = ()

    @property
    def deployed(self) -> bool:
        return bool(self.live)

    def choose(self, rng: random.Random) -> Variant:
        names = list(self.live)
        name = rng.choices(names, weights=[self.weights[n] for n in names])[0]
        return self.live[name]

    def state(self) -> EndpointState:
        loaded = [*self.live.values(), *([self.shadow] if self.shadow else [])]
        return EndpointState(
            model=self.model,
            weights=dict(self.weights),
            shadow=self.shadow.name if self.shadow else None,
            generation=self.generation,
            change_id=self.change_id,
            updated_at=self.updated_at,
            variants={variant.name: variant.version for variant in loaded},
        )

    def persisted(self) -> PersistedState:
        return PersistedState(
            model=self.model,
            weights=dict(self.weights),
            shadow=self.shadow.name if self.shadow else None,
            generation=self.generation,
            change_id=self.change_id,
            updated_at=self.updated_at,
            applied_change_ids=list(self.applied),
        )


def read_state(path: Path, model: str) -> PersistedState | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StateError(f"cannot read {path}: {err.strerror}") from None
    try:
        state = PersistedState.model_validate_json(text)
    except ValidationError as err:
        raise StateError(
            f"{path} is not a valid endpoint state ({err.error_count()} problems): fix or remove it"
        ) from None
    if state.model != model:
        raise StateError(f"{path} holds the state of {state.model}, not {model}")
    return state


def write_state(path: Path, state: PersistedState) -> None:
    """Replace the file atomically and durably: a crash leaves the old state or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(state.model_dump_json(indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


class Router:
    """The current Routing and the one-at-a-time changes to it."""

    def __init__(
        self, model: str, state_file: Path, loader: VariantLoader, seed: int | None
    ) -> None:
        self.model = model
        self.state_file = state_file
        self.loader = loader
        self.rng = random.Random(seed)
        self.current = Routing(model=model, generation=0, updated_at=datetime.now(UTC))
        self._lock = asyncio.Lock()

    def start(self) -> None:
        """Restore the persisted state, or serve the registry's champion at 100% (blocking)."""
        state = read_state(self.state_file, self.model)
        if state is not None:
            self.current = self._routing(state)
            return
        champion = self.loader.champion()
        if champion is None:
            return  # nothing to serve until weights are set
        initial = PersistedState(
            model=self.model,
            weights={self.loader.load(champion).name: 100},
            generation=1,
            change_id=INITIAL_CHANGE,
            updated_at=datetime.now(UTC),
            applied_change_ids=[INITIAL_CHANGE],
        )
        routing = self._routing(initial)
        self._persist(routing)
        self.current = routing

    async def apply(self, change: WeightsBody) -> tuple[Routing, bool]:
        """Apply a validated change; (the routing now in force, whether this call changed it).

        Raises VariantLoadError (unknown or unloadable variant) or StateError (not persisted);
        the routing in force is unchanged then.
        """
        async with self._lock:
            current = self.current
            if change.change_id in current.applied:
                return current, False
            names = sorted(change.weights) + ([change.shadow] if change.shadow else [])
            # Zero-weight names must exist too, but only variants taking traffic are loaded.
            await _off_loop(lambda: self.loader.known(names))
            state = PersistedState(
                model=self.model,
                weights=change.live,
                shadow=change.shadow,
                generation=current.generation + 1,
                change_id=change.change_id,
                updated_at=datetime.now(UTC),
                applied_change_ids=[*current.applied, change.change_id][-APPLIED_CHANGE_IDS:],
            )
            routing = await _off_loop(lambda: self._routing(state))
            await _off_loop(lambda: self._persist(routing))
            self.current = routing
            return routing, True

    def _routing(self, state: PersistedState) -> Routing:
        """Load every variant the state names (blocking)."""
        names = sorted(state.weights) + ([state.shadow] if state.shadow else [])
        variants = self.loader.load_named(names)
        live = {name: variants[name] for name in sorted(state.weights) if state.weights[name] > 0}
        return Routing(
            model=self.model,
            generation=state.generation,
            updated_at=state.updated_at,
            live=live,
            weights={name: state.weights[name] for name in live},
            shadow=variants[state.shadow] if state.shadow else None,
            change_id=state.change_id,
            applied=tuple(state.applied_change_ids[-APPLIED_CHANGE_IDS:]),
        )

    def _persist(self, routing: Routing) -> None:
        try:
            write_state(self.state_file, routing.persisted())
        except OSError as err:
            raise StateError(f"cannot write {self.state_file}: {err.strerror}") from err


async def _off_loop(call: Callable[[], _T]) -> _T:
    return await anyio.to_thread.run_sync(call)
