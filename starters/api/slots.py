"""The Python client API for the global limit of concurrent trainings (`training-slots`).

slots = TrainingSlotsClient(client)
await slots.ensure(3)          # start the limiter if needed, then set K = 3 (idempotent)
status = await slots.status()  # holders and the waiting queue, in grant order
"""

from __future__ import annotations

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from workflows.common import names
from workflows.slots.models import MAX_LIMIT, SetLimit, SlotsStatus, TrainingSlotsInput
from workflows.slots.workflow import TrainingSlots

SLOTS_HELP = """\
The global limit of concurrent trainings. Loops signal `request` before training and
`release` after; slots are granted in priority order (1 first, then the earliest request).
Change the limit: **Update** `set_limit` with `{"limit": 5, "by": "you"}`. Query: `status`.
"""


class TrainingSlotsNotRunning(LookupError):
    """No limiter runs: trainings are not limited."""


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"the limit of concurrent trainings must be 1..{MAX_LIMIT}, got {limit}")
    return limit


class TrainingSlotsClient:
    def __init__(self, client: Client, task_queue: str = names.TASK_QUEUE) -> None:
        self.client = client
        self.task_queue = task_queue

    def handle(self) -> WorkflowHandle[TrainingSlots, None]:
        return self.client.get_workflow_handle_for(TrainingSlots.run, names.TRAINING_SLOTS_ID)

    async def ensure(self, limit: int, by: str = "worker") -> None:
        """Start the limiter if it is not running (an existing one keeps its holders and
        queue) and set its limit: what `retrain worker --max-concurrent-trainings K` does.

        Signal-with-start, so it needs no worker to answer: a worker calls it before it
        polls, possibly as the only worker there is."""
        change = SetLimit(limit=check_limit(limit), by=by, reason="ensured at worker start")
        await self.client.start_workflow(
            TrainingSlots.run,
            TrainingSlotsInput(limit=limit),
            id=names.TRAINING_SLOTS_ID,
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="set_limit",
            start_signal_args=[change],
            static_summary=f"Global limit of concurrent trainings (started with {limit})",
            static_details=SLOTS_HELP,
        )

    async def set_limit(self, limit: int, by: str = "", reason: str = "") -> SlotsStatus:
        """Change K on the running limiter; validated here first, so bad input never reaches
        the server (ValueError)."""
        request = SetLimit(limit=check_limit(limit), by=by, reason=reason)
        try:
            return await self.handle().execute_update(TrainingSlots.set_limit, request)
        except RPCError as err:
            raise _not_running(err) from None

    async def status(self) -> SlotsStatus:
        handle = self.handle()
        try:
            # A closed limiter would still answer a query, from a worker replaying its
            # history (or time out without one): it limits nothing, so say that instead.
            described = await handle.describe()
            # A run that continued as new is followed by the next run (the query reaches it).
            if described.status not in (
                WorkflowExecutionStatus.RUNNING,
                WorkflowExecutionStatus.CONTINUED_AS_NEW,
            ):
                last = described.status.name.lower() if described.status else "unknown"
                raise TrainingSlotsNotRunning(f"{_NOT_RUNNING} (its last run is {last})")
            return await handle.query(TrainingSlots.status)
        except RPCError as err:
            raise _not_running(err) from None


_NOT_RUNNING = (
    f"no {names.TRAINING_SLOTS_ID} workflow runs, so trainings are not limited; start one "
    "with `retrain worker --max-concurrent-trainings K`"
)


def _not_running(err: RPCError) -> Exception:
    if err.status is RPCStatusCode.NOT_FOUND:
        return TrainingSlotsNotRunning(_NOT_RUNNING)
    return err
