"""The global limit of concurrent trainings: messages and state of `TrainingSlots`.

One `TrainingSlots` workflow (id `training-slots`) holds the limit K, the loops holding a slot
and the loops waiting for one. Loops ask with the signal `request`, are told with the signal
`training_slot_granted`, and give the slot back with the signal `release`; operators change K
with the update `set_limit` and read everything with the query `status`. Field names are the
public JSON contract (`retrain slots show --json`, the Web UI's Signal/Update dialogs).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, field_validator

from workflows.common.models import StateModel, StrictModel
from workflows.common.names import validate_model_name

MAX_LIMIT = 1000
# Each waiter is ~150 bytes of state carried through continue-as-new (2 MB payload limit); a
# loop runs per model at a time, so this is far above any fleet's number of models.
MAX_WAITING = 5000
RECENT_EVENTS = 100
RECENT_IGNORED = 20
SLOT_GRANTED_SIGNAL = "training_slot_granted"

LoopId = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^\S+$")]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT)]
Priority = Annotated[int, Field(ge=1, le=5)]


class SlotRequest(StrictModel):
    """Signal `request`: a loop asks for a training slot (repeating it changes nothing)."""

    loop_id: LoopId
    model: str
    # The loop's trigger priority: 1 (most urgent) .. 5.
    priority: Priority
    # When the loop asked (its workflow time): orders waiters of equal priority.
    requested_at: AwareDatetime

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return validate_model_name(value)


class SlotRelease(StrictModel):
    """Signal `release`: the loop is done with its slot, or no longer waits for one."""

    loop_id: LoopId
    reason: Annotated[str, Field(max_length=200)] = ""


class SlotGrant(StrictModel):
    """Signal `training_slot_granted`, sent by the limiter to the loop it lets in."""

    loop_id: LoopId
    granted_at: AwareDatetime
    limit: Limit


class SetLimit(StrictModel):
    """Update `set_limit`: the new K. Holders above a lowered limit keep their slots."""

    limit: Limit
    by: Annotated[str, Field(max_length=200)] = ""
    reason: Annotated[str, Field(max_length=500)] = ""


class PositionQuery(StrictModel):
    """Query `position`: where one loop stands (cheap, unlike `status` with a long queue)."""

    loop_id: LoopId


class SlotHolder(StrictModel):
    loop_id: str
    model: str
    priority: int
    requested_at: datetime
    granted_at: datetime


SlotEventKind = Literal["granted", "released", "reclaimed", "limit", "refused"]


class SlotEvent(StrictModel):
    at: datetime
    kind: SlotEventKind
    loop_id: str | None = None
    detail: str = ""


class IgnoredMessage(StrictModel):
    """A malformed signal: logged and kept here, never applied."""

    at: datetime
    name: str
    reason: str


class SlotsState(StateModel):
    """Everything the limiter knows; carried whole through continue-as-new."""

    limit: Limit
    holders: list[SlotHolder] = []
    # Kept in grant order: priority, then request time, then loop id.
    waiting: list[SlotRequest] = []
    # Granted, but the loop has not been told yet (the signal is sent by the main loop).
    unnotified: list[str] = []
    last_reclaim_at: datetime | None = None
    # Someone had to wait since the last reclaim: look for dead holders soon.
    reclaim_requested: bool = False
    granted_total: int = 0
    released_total: int = 0
    reclaimed_total: int = 0
    events: list[SlotEvent] = []
    ignored: list[IgnoredMessage] = []


class TrainingSlotsInput(StrictModel):
    limit: Limit
    state: SlotsState | None = None


class SlotsStatus(StrictModel):
    """Query `status`, and what `set_limit` returns."""

    limit: int
    in_use: int
    holders: list[SlotHolder]
    # In grant order: the first one gets the next free slot.
    waiting: list[SlotRequest]
    granted_total: int
    released_total: int
    reclaimed_total: int
    last_reclaim_at: datetime | None
    events: list[SlotEvent]
    ignored: list[IgnoredMessage]


class SlotPosition(StrictModel):
    """Query `position`: `holding`, or 1-based `position` in the queue, or neither."""

    loop_id: str
    holding: bool
    position: int | None
    waiting: int
    in_use: int
    limit: int


class SlotTicket(StrictModel):
    """What `request_training_slot` tells the loop after asking."""

    # False: no limiter runs, so the loop trains at once.
    limiter_running: bool
    holding: bool = False
    position: int | None = None
    waiting: int = 0
    limit: int | None = None


class SlotWait(StateModel):
    """The loop's side, kept in its audit record: how long it waited for its slot."""

    limiter_id: str
    requested_at: datetime
    # Where it stood when it asked (None: granted at once, or the limiter did not say).
    position: int | None = None
    limit: int | None = None
    granted_at: datetime | None = None
    waited_seconds: float | None = None
    released_at: datetime | None = None
    note: str = ""


class LoopsToCheck(StrictModel):
    """`find_closed_loops` input: the holders and waiters to describe."""

    loop_ids: list[str]


class ClosedLoop(StrictModel):
    loop_id: str
    # The execution status, lowercase (`terminated`, `timed_out`, ...), or `not_found`.
    status: str


class ClosedLoops(StrictModel):
    closed: list[ClosedLoop] = []
