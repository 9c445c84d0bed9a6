"""Run `retrain serve MODEL` as a child process (the demo's endpoint), and wait for it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from starters.api.dev_server import stop

STARTUP_SECONDS = 120.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def endpoint_process(
    home: Path, model: str, port: int, log_file: Path, seed: int | None = None
) -> Iterator[str]:
    """Start the endpoint on 127.0.0.1:`port`, yield its URL once healthy, stop it (SIGTERM:
    it flushes its capture) on the way out."""
    command = [
        str(Path(sys.executable).parent / "retrain"),
        "serve",
        model,
        "--home",
        str(home),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    url = f"http://127.0.0.1:{port}"
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ}
        )
    try:
        _wait_healthy(process, url, log_file)
        yield url
    finally:
        stop(process)


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log_file: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the endpoint exited with {process.returncode}: see {log_file}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the endpoint at {url} was not healthy in {STARTUP_SECONDS:.0f} s")
