"""`retrain server` (the embedded Temporal dev server) and `retrain worker`."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from temporalio.client import Client, RPCError

from starters.api.connection import retrain_home
from starters.api.dev_server import DevServer, stop
from starters.api.observability import TracingUnavailable, setup_tracing, worker_interceptors
from starters.cli.common import (
    LogFormatOption,
    connection,
    console,
    errors,
    fail,
    run,
    setup_logging,
)
from workflows.common.names import SEARCH_ATTRIBUTES, TASK_QUEUE


def server(
    port: Annotated[int, typer.Option(help="gRPC frontend port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Web UI port")] = 8233,
    ip: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    namespace: Annotated[str, typer.Option(help="Namespace to create")] = "default",
) -> None:
    """Run the embedded Temporal dev server (Web UI, SQLite under .retrain/) until Ctrl-C."""
    dev = DevServer(home=retrain_home(), ip=ip, port=port, ui_port=ui_port, namespace=namespace)
    # SIGTERM (docker stop, systemd, kill) shuts the server down as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        process = dev.spawn()
    except (RuntimeError, FileNotFoundError) as err:
        raise fail(str(err)) from None
    try:
        dev.wait_ready(process)
        console.print(f"Temporal dev server on [bold]{dev.address}[/] (namespace {namespace})")
        console.print(f"Web UI: [bold link={dev.ui_url}]{dev.ui_url}[/]")
        console.print(f"Executions persist in {dev.db_file}. Ctrl-C to stop.")
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(process)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _host_port(value: str | None) -> str | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"{value!r} is not HOST:PORT (e.g. 0.0.0.0:9464)")
    return value


def worker(
    ctx: typer.Context,
    task_queue: Annotated[str, typer.Option(help="Task queue to poll")] = TASK_QUEUE,
    metrics_address: Annotated[
        str | None,
        typer.Option(
            help="Serve Prometheus /metrics (the SDK's and ours) on HOST:PORT, e.g. 0.0.0.0:9464",
            envvar="RETRAIN_METRICS_ADDRESS",
            callback=_host_port,
        ),
    ] = None,
    max_concurrent_trainings: Annotated[
        int | None,
        typer.Option(
            help="Limit trainings across every model to K at once (the `training-slots` "
            "workflow; loops wait in priority order). Unset: no limit, or the one already set",
            envvar="RETRAIN_MAX_CONCURRENT_TRAININGS",
            min=1,
            max=1000,
        ),
    ] = None,
    log_format: LogFormatOption = None,
) -> None:
    """Run a worker (Ctrl-C / SIGTERM for a graceful shutdown). Traced when
    OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    from workers.fleet_metrics import ApprovalGauges
    from workers.search_attributes import ensure_search_attributes
    from workers.telemetry import metrics_runtime
    from workers.worker import GRACEFUL_SHUTDOWN, run_worker

    setup_logging(log_format)
    try:
        # Before connecting: the connection's tracing interceptor uses this provider.
        worker_tracing = worker_interceptors(setup_tracing("retrain-worker"))
    except TracingUnavailable as err:
        raise fail(str(err), code=2) from None
    runtime = None
    if metrics_address is not None:
        try:
            runtime = metrics_runtime(metrics_address)
        except ValueError as err:  # the SDK's word for a taken port or an unusable address
            raise fail(f"cannot serve metrics on {metrics_address}: {err}") from None

    async def main(client: Client) -> None:
        try:
            added = await ensure_search_attributes(client)
            if added:
                console.print(f"registered search attributes: {', '.join(added)}")
        except RPCError as err:
            errors.print(
                f"[yellow]warning:[/] could not check search attributes ({err.message}); "
                "register " + ", ".join(key.name for key in SEARCH_ATTRIBUTES) + " yourself"
            )
        target = client.service_client.config.target_host
        console.print(f"worker on task queue [bold]{task_queue}[/] at {target}")
        if max_concurrent_trainings is not None:
            from starters.api.slots import TrainingSlotsClient

            await TrainingSlotsClient(client, task_queue).ensure(max_concurrent_trainings)
            console.print(f"at most {max_concurrent_trainings} trainings at once across models")
        background = []
        if runtime is not None:
            console.print(f"metrics on http://{metrics_address}/metrics")
            gauges = ApprovalGauges(client, runtime.metric_meter)
            background.append(asyncio.create_task(gauges.run()))
        try:
            await run_worker(
                client,
                home=retrain_home(),
                task_queue=task_queue,
                graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
                interceptors=worker_tracing,
            )
        finally:
            for task in background:
                task.cancel()

    run(main, connection(ctx), runtime)
