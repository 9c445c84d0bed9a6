"""The loops' and the limiter's side effects on Temporal itself (the global training limit).

`request_training_slot` signals the `training-slots` workflow when it runs and says where the
loop stands; no limiter running means no limit, so the loop trains at once (every deployment
without `--max-concurrent-trainings` behaves as before). `find_closed_loops` describes holders
and waiters for the limiter, which frees the places of loops that ended without releasing.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from workflows.common import names
from workflows.common.errors import ErrorType
from workflows.common.names import ActivityName
from workflows.slots.models import (
    ClosedLoop,
    ClosedLoops,
    LoopsToCheck,
    PositionQuery,
    SlotPosition,
    SlotRequest,
    SlotTicket,
)

QUERY_TIMEOUT = timedelta(seconds=10)
DESCRIBE_CONCURRENCY = 20


class TrainingSlotActivities:
    def __init__(self, client: Client) -> None:
        self.client = client

    @activity.defn(name=ActivityName.REQUEST_TRAINING_SLOT)
    async def request_slot(self, request: SlotRequest) -> SlotTicket:
        handle = self.client.get_workflow_handle(names.TRAINING_SLOTS_ID)
        try:
            # Idempotent on the limiter: a retried attempt changes nothing.
            await handle.signal("request", request)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:  # none, or closed: no limit
                return SlotTicket(limiter_running=False)
            raise
        try:
            where: SlotPosition = await handle.query(
                "position",
                PositionQuery(loop_id=request.loop_id),
                result_type=SlotPosition,
                rpc_timeout=QUERY_TIMEOUT,
            )
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:  # stopped since: no limit any more
                return SlotTicket(limiter_running=False)
            # Only what the loop shows depends on the answer: it waits for the grant anyway.
            activity.logger.warning("training-slots did not answer its position: %s", err)
            return SlotTicket(limiter_running=True)
        except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as err:
            activity.logger.warning("training-slots did not answer its position: %s", err)
            return SlotTicket(limiter_running=True)
        if not where.holding and where.position is None:
            # Refused (the queue is full): asking again later is the loop's way of waiting.
            raise ApplicationError(
                f"training-slots refused {request.loop_id}: {where.waiting} loops already wait",
                type=ErrorType.TRAINING_SLOTS_FULL,
            )
        return SlotTicket(
            limiter_running=True,
            holding=where.holding,
            position=where.position,
            waiting=where.waiting,
            limit=where.limit,
        )

    @activity.defn(name=ActivityName.FIND_CLOSED_LOOPS)
    async def find_closed(self, check: LoopsToCheck) -> ClosedLoops:
        """The loops among `check` whose executions are no longer running."""
        gate = asyncio.Semaphore(DESCRIBE_CONCURRENCY)

        async def closed_status(loop_id: str) -> str | None:
            async with gate:
                try:
                    described = await self.client.get_workflow_handle(loop_id).describe()
                except RPCError as err:
                    if err.status is RPCStatusCode.NOT_FOUND:
                        return "not_found"
                    raise
                finally:
                    activity.heartbeat()
            if described.status in (None, WorkflowExecutionStatus.RUNNING):
                return None
            return described.status.name.lower()

        statuses = await asyncio.gather(*(closed_status(i) for i in check.loop_ids))
        return ClosedLoops(
            closed=[
                ClosedLoop(loop_id=loop_id, status=status)
                for loop_id, status in zip(check.loop_ids, statuses, strict=True)
                if status is not None
            ]
        )
