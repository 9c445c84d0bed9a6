"""`retrain serve MODEL`: the local prediction endpoint (serving/app.py) under uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from starters.api.connection import retrain_home
from starters.cli.common import ModelArgument, console, fail


def endpoint_port(url: str) -> int:
    """The port of an endpoint URL, the scheme's default when it names none."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as err:
        raise ValueError(f"invalid endpoint_url {url!r}: {err}") from None
    return port or (443 if parts.scheme == "https" else 80)


def serve(
    model: ModelArgument,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port (default: the spec's deployment endpoint_url)"),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(help="Retrain home (default: $RETRAIN_HOME or .retrain)", file_okay=False),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the weighted routing")] = None,
    model_threads: Annotated[
        int, typer.Option(min=1, max=64, help="Model calls running at once")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Serve MODEL's registered versions over HTTP: weighted routing, shadow mirroring, data
    capture, feedback, admin API and Prometheus metrics. Ctrl-C / SIGTERM flush and stop."""
    # Imported here: the endpoint's stack (MLflow, pandas, uvicorn) would slow every command.
    import uvicorn

    from serving.app import EndpointError, create_app
    from serving.config import EndpointConfig

    if log_level not in ("debug", "info", "warning", "error"):
        raise fail(f"--log-level must be debug, info, warning or error, not {log_level}", code=2)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    root = (home or retrain_home()).resolve()
    try:
        config = EndpointConfig(home=root, model=model, seed=seed, model_threads=model_threads)
        app = create_app(config)
        chosen = port or endpoint_port(app.state.endpoint.spec.loop.deployment.endpoint_url)
    except (EndpointError, ValueError) as err:
        raise fail(str(err)) from None
    state = app.state.endpoint.router.current.state()
    split = ", ".join(f"{name} {weight}%" for name, weight in state.weights.items())
    console.print(
        f"serving [bold]{model}[/] on http://{host}:{chosen} "
        f"(generation {state.generation}: {split or 'no model deployed yet'}"
        + (f", shadow {state.shadow}" if state.shadow else "")
        + ")"
    )
    uvicorn.run(app, host=host, port=chosen, lifespan="on", log_level=log_level)
