"""Connect to Temporal from the standard settings, always with the pydantic data converter.

`temporalio.envconfig` reads the same settings as the `temporal` CLI: TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*, TEMPORAL_PROFILE and the TOML config file
(TEMPORAL_CONFIG_FILE). Without any of them we connect to the local dev server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

DEFAULT_ADDRESS = "localhost:7233"


def workflow_missing(err: RPCError) -> bool:
    """NOT_FOUND about the workflow, not about the namespace (`--namespace` misspelt): only the
    first is answered with "no such coordinator/loop", the second must reach the person as is."""
    # The server says "Namespace X is not found." for the namespace; a missing workflow's
    # message may name its namespace too ("WorkflowId{namespace='default', ...}").
    return err.status is RPCStatusCode.NOT_FOUND and not err.message.lower().startswith(
        "namespace "
    )


def retrain_home() -> Path:
    """Where local state lives (dev server database, notification outbox): `$RETRAIN_HOME`."""
    return Path(os.environ.get("RETRAIN_HOME", ".retrain")).resolve()


async def connect(
    address: str | None = None,
    namespace: str | None = None,
    runtime: Runtime | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Client:
    """`interceptors`: client interceptors (OpenTelemetry tracing, starters/api/observability.py);
    those that are worker interceptors too apply to workers built on this client."""
    config = ClientConfig.load_client_connect_config()
    if address:
        config["target_host"] = address
    config.setdefault("target_host", DEFAULT_ADDRESS)
    if namespace:
        config["namespace"] = namespace
    return await Client.connect(
        **config,
        data_converter=pydantic_data_converter,
        runtime=runtime,
        interceptors=list(interceptors),
    )
