"""Azure clients for one workspace, from azure-identity's default credential.

Credentials never appear in a spec or an activity input: `DefaultAzureCredential` (an
environment service principal, workload or managed identity, `az login`) signs every request
with a Microsoft Entra token, so secrets never reach workflow history. Every client has its
SDK retries off (`retry_total=0`): Temporal's retry policies back off instead, visibly in the
history, and honour Azure's Retry-After (`activities/azure/errors.py`).

Tests hand in `credential` (a static token) and `transport` (a factory of azure-core
transports that reach the local fake, tests/support/azure_fake/client.py): every azure-core
client takes both, so the real SDKs build their real Azure URLs and the fake answers them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from workflows.spec.azure import AzureSettings

ARM_SCOPE = "https://management.azure.com/.default"


class AzureClients:
    def __init__(
        self,
        settings: AzureSettings,
        *,
        credential: Any = None,
        transport: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self._credential = credential
        self._transport = transport

    @cached_property
    def credential(self) -> Any:
        if self._credential is not None:
            return self._credential
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    def options(self) -> dict[str, Any]:
        """What every azure-core client is built with: no SDK retries, the test transport."""
        options: dict[str, Any] = {"retry_total": 0}
        if self._transport is not None:
            options["transport"] = self._transport()
        return options

    @cached_property
    def ml(self) -> Any:
        """azure-ai-ml's MLClient on the workspace (jobs, models, online endpoints)."""
        from azure.ai.ml import MLClient

        s = self.settings
        return MLClient(
            self.credential, s.subscription_id, s.resource_group, s.workspace, **self.options()
        )

    @cached_property
    def monitor(self) -> Any:
        """azure-mgmt-monitor (metrics, autoscale settings)."""
        from azure.mgmt.monitor import MonitorManagementClient

        return MonitorManagementClient(
            self.credential, self.settings.subscription_id, **self.options()
        )

    @cached_property
    def blob(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(
            f"https://{self.settings.storage_account}.blob.core.windows.net",
            credential=self.credential,
            **self.options(),
        )

    @cached_property
    def eventgrid(self) -> Any:
        """A publisher on the settings' topic. azure-eventgrid 4.22's public sync client drops
        its keyword arguments (transport, retries) for basic topics; the class it wraps, which
        speaks the same protocol, keeps them."""
        from azure.eventgrid._legacy import EventGridPublisherClient

        assert self.settings.eventgrid_topic is not None
        return EventGridPublisherClient(
            self.settings.eventgrid_topic, self.credential, **self.options()
        )

    @property
    def endpoint_id(self) -> str:
        s = self.settings
        return (
            f"/subscriptions/{s.subscription_id}/resourceGroups/{s.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{s.workspace}"
            f"/onlineEndpoints/{s.endpoint_name}"
        )
