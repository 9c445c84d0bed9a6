"""Every activity heartbeats while it runs, so a worker that dies is noticed in seconds.

Without heartbeats, Temporal learns an activity's worker is gone only when its start-to-close
timeout expires: a killed worker cost a registration 10 minutes and an evaluation 5. The
workflows give every activity a short heartbeat timeout (`workflows/common/retries.py`
LIVENESS), and this interceptor beats for every activity every `interval` while it runs: from
the worker's event loop, so a sync activity blocked in a long call (MLflow, scikit-learn) keeps
beating while its process is alive and stops the moment the process dies. It repeats the
activity's own last heartbeat details, so what the activity reported is never overwritten.
A hung activity is still bounded by its start-to-close timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

# Beat at least this often (and at least three times per heartbeat timeout).
INTERVAL = timedelta(seconds=3)


class KeepAlive(Interceptor):
    def __init__(self, interval: timedelta = INTERVAL) -> None:
        self.interval = interval

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self.interval)


class _Outbound(ActivityOutboundInterceptor):
    """Remembers the activity's own heartbeat details."""

    def __init__(self, next: ActivityOutboundInterceptor) -> None:
        super().__init__(next)
        self.details: tuple[Any, ...] = ()

    def heartbeat(self, *details: Any) -> None:
        self.details = details
        super().heartbeat(*details)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, interval: timedelta) -> None:
        super().__init__(next)
        self.interval = interval
        self.outbound: _Outbound | None = None

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        self.outbound = _Outbound(outbound)
        super().init(self.outbound)

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        timeout = activity.info().heartbeat_timeout
        if not timeout or self.outbound is None:
            return await super().execute_activity(input)
        every = min(self.interval, timeout / 3).total_seconds()
        beating = asyncio.create_task(self._beat(self.outbound, every))
        try:
            return await super().execute_activity(input)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    @staticmethod
    async def _beat(outbound: _Outbound, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            outbound.next.heartbeat(*outbound.details)
