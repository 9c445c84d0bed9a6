"""Google Cloud clients for one project and location, from Application Default Credentials.

Credentials are never passed in a spec or an activity input: the worker's ADC (a service
account key file named by GOOGLE_APPLICATION_CREDENTIALS, workload identity, gcloud login) are
used, so they never reach workflow history. Every client speaks REST. `api_endpoint`,
`storage_endpoint`, `monitoring_endpoint`, `bigquery_endpoint` and `pubsub_endpoint` point the
clients at one address (tests: the local fake on loopback, with anonymous credentials).

Vertex AI is reached through its v1 GAPIC clients (`google.cloud.aiplatform_v1`) only, never
the high-level SDK (`google.cloud.aiplatform`, `vertexai`): that SDK loads the whole v1beta1
API, which the image removes (ops/image/slim.py).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import google.auth
from google.api_core.client_options import ClientOptions
from google.auth.credentials import Credentials

if TYPE_CHECKING:
    import google.cloud.aiplatform_v1 as aiplatform_v1


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

    @property
    def vertex_options(self) -> ClientOptions:
        """The regional Vertex API, or the address tests point the clients at."""
        return ClientOptions(
            api_endpoint=self.api_endpoint or f"{self.location}-aiplatform.googleapis.com"
        )

    @property
    def vertex_parent(self) -> str:
        """The project and location Vertex resources are created in."""
        return f"projects/{self.project}/locations/{self.location}"

    # Each client's library is imported on first use, as for the clients below.
    @cached_property
    def models(self) -> aiplatform_v1.ModelServiceClient:
        from google.cloud.aiplatform_v1 import ModelServiceClient

        return ModelServiceClient(
            credentials=self.credentials, transport="rest", client_options=self.vertex_options
        )

    @cached_property
    def endpoints(self) -> aiplatform_v1.EndpointServiceClient:
        from google.cloud.aiplatform_v1 import EndpointServiceClient

        return EndpointServiceClient(
            credentials=self.credentials, transport="rest", client_options=self.vertex_options
        )

    @cached_property
    def jobs(self) -> aiplatform_v1.JobServiceClient:
        from google.cloud.aiplatform_v1 import JobServiceClient

        return JobServiceClient(
            credentials=self.credentials, transport="rest", client_options=self.vertex_options
        )

    @cached_property
    def pipelines(self) -> aiplatform_v1.PipelineServiceClient:
        from google.cloud.aiplatform_v1 import PipelineServiceClient

        return PipelineServiceClient(
            credentials=self.credentials, transport="rest", client_options=self.vertex_options
        )

    @cached_property
    def storage(self) -> Any:
        # google-cloud-storage has no py.typed: mypy finds it only through a typed importer.
        import google.cloud.storage as storage  # type: ignore[import-untyped, unused-ignore]

        options = (
            ClientOptions(api_endpoint=self.storage_endpoint) if self.storage_endpoint else None
        )
        return storage.Client(
            project=self.project, credentials=self.credentials, client_options=options
        )

    @cached_property
    def bigquery(self) -> Any:
        import google.cloud.bigquery as bigquery

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
