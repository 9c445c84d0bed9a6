"""The gateway's Temporal client: connected on first use, kept, and replaced after a failed
connection, so the gateway starts and accepts events while Temporal is down."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio.client import Client

from starters.api.coordinators import Coordinators


class TemporalUnavailable(RuntimeError):
    """No connection to Temporal could be made."""


class TemporalLink:
    def __init__(self, connect: Callable[[], Awaitable[Client]], task_queue: str) -> None:
        self._connect = connect
        self.task_queue = task_queue
        self._coordinators: Coordinators | None = None
        self._lock = asyncio.Lock()

    async def coordinators(self) -> Coordinators:
        if self._coordinators is not None:
            return self._coordinators
        async with self._lock:
            if self._coordinators is None:
                try:
                    client = await self._connect()
                except RuntimeError as err:  # the SDK's "Failed client connect: ..."
                    raise TemporalUnavailable(str(err)) from None
                # Events reach it routed to a registered model (routing.py): no second check.
                self._coordinators = Coordinators(client, self.task_queue, models=None)
            return self._coordinators

    async def health(self, timeout: float = 2.0) -> str | None:
        """None when Temporal answers its health check within `timeout`, else why not."""
        try:
            coordinators = await asyncio.wait_for(self.coordinators(), timeout)
            service = coordinators.client.service_client
            healthy = await service.check_health(timeout=timedelta(seconds=timeout))
        except TimeoutError:
            return f"no answer within {timeout:g}s"
        except Exception as err:  # any failure is an answer here: the check reports it
            return f"{type(err).__name__}: {err}"
        return None if healthy else "the health check answered NOT_SERVING"
