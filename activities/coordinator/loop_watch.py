"""Learn how a RetrainingLoop ended when the coordinator run that started it is gone.

A coordinator awaits its child's result directly; after continue-as-new the new run no longer
holds that handle, so it runs this activity, which waits on the loop's result through the client
(heartbeating, so a lost worker is noticed and the wait resumes elsewhere).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client, WorkflowFailureError

from workflows.common.names import ActivityName
from workflows.loop.models import LoopResult, result_from_failure

HEARTBEAT_EVERY = timedelta(seconds=10)


class LoopWatchActivities:
    def __init__(self, client: Client) -> None:
        self.client = client

    @activity.defn(name=ActivityName.AWAIT_LOOP_RESULT)
    async def await_loop_result(self, loop_id: str) -> LoopResult:
        handle = self.client.get_workflow_handle(loop_id, result_type=LoopResult)
        wait: asyncio.Future[LoopResult] = asyncio.ensure_future(handle.result())
        try:
            while True:
                done, _ = await asyncio.wait({wait}, timeout=HEARTBEAT_EVERY.total_seconds())
                if done:
                    break
                activity.heartbeat()
            return wait.result()
        except WorkflowFailureError as err:
            return result_from_failure(loop_id, err)
        finally:
            wait.cancel()
