"""Google Cloud clients for one project and location, from Application Default Credentials.

Credentials are never passed in a spec or an activity input: the worker's ADC (a service
account key file named by GOOGLE_APPLICATION_CREDENTIALS, workload identity, gcloud login) are
used, so they never reach workflow history. Every client speaks REST. `api_endpoint`,
`storage_endpoint`, `monitoring_endpoint`, `bigquery_endpoint` and `pubsub_endpoint` point the
clients at one address (tests: the local fake on loopback, with anonymous credentials).
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Any

import google.auth
from google.api_core.client_options import ClientOptions
from google.auth.credentials import Credentials

_init_lock = threading.Lock()


class GcpClients:
    def __init__(
        self,
        project: str,
        location: str,
        *,
        credentials: Credentials | None = None,
        api_endpoint: str | None = None,
        storage_endpoint: str | None = None,
        monitoring_endpoint: str | None = None,
        bigquery_endpoint: str | None = None,
        pubsub_endpoint: str | None = None,
    ) -> None:
        self.project = project
        self.location = location
        self.api_endpoint = api_endpoint
        self.storage_endpoint = storage_endpoint
        self.monitoring_endpoint = monitoring_endpoint
        self.bigquery_endpoint = bigquery_endpoint
        self.pubsub_endpoint = pubsub_endpoint
        self._credentials = credentials

    @cached_property
    def credentials(self) -> Credentials:
        if self._credentials is not None:
            return self._credentials
        found, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        return found

    def init_vertex(self) -> None:
        """Point the aiplatform SDK (process-global configuration) at our project and endpoint.

        Every call site passes project, location and credentials explicitly as well, so models
        in other projects of the same worker are unaffected; the endpoint and transport are
        global in the SDK, hence one Vertex API endpoint per worker process.
        """
        from google.cloud import aiplatform

        with _init_lock:
            aiplatform.init(
                project=self.project,
                location=self.location,
                credentials=self.credentials,
                api_endpoint=self.api_endpoint,
                api_transport="rest",
            )

    @cached_property
    def storage(self) -> Any:
        from google.cloud import storage

        options = (
            ClientOptions(api_endpoint=self.storage_endpoint) if self.storage_endpoint else None
        )
        return storage.Client(
            project=self.project, credentials=self.credentials, client_options=options
        )

    @cached_property
    def bigquery(self) -> Any:
        from google.cloud import bigquery

        options = (
            ClientOptions(api_endpoint=self.bigquery_endpoint) if self.bigquery_endpoint else None
        )
        return bigquery.Client(
            project=self.project, credentials=self.credentials, client_options=options
        )

    @cached_property
    def publisher(self) -> Any:
        """Pub/Sub's publisher over REST (the library's default transport is gRPC)."""
        from google.pubsub_v1 import PublisherClient

        options = ClientOptions(api_endpoint=self.pubsub_endpoint) if self.pubsub_endpoint else None
        return PublisherClient(
            credentials=self.credentials, transport="rest", client_options=options
        )
