"""The parts chaos kills: the Temporal dev server, `retrain worker`, `retrain serve`, each an OS
process with its output in a log file, started with this checkout's code on PYTHONPATH and
killed with SIGKILL (a crashed container, an OOM kill), then started again the same way."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from starters.api.dev_server import DevServer, port_open

REPO = Path(__file__).resolve().parents[2]
RETRAIN = [sys.executable, "-c", "from starters.cli.app import app; app()"]


def child_env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "RETRAIN_HOME": str(home), "PYTHONPATH": str(REPO), **extra}


def kill(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the process (and its group: nothing it started survives it, except what it
    started in a group of its own, such as a training runner, as after a real crash)."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGKILL)
    process.wait()


@dataclass
class Server:
    """The dev server on a SQLite file; killed and restarted on the same file and ports."""

    home: Path
    port: int
    ui_port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def dev(self) -> DevServer:
        return DevServer(
            home=self.home, port=self.port, ui_port=self.ui_port, extra_args=self.extra_args
        )

    @property
    def address(self) -> str:
        return self.dev.address

    async def start(self) -> float:
        """Start and wait until the namespace answers; the seconds it took."""
        started = time.monotonic()
        deadline = started + 60
        while port_open("127.0.0.1", self.port) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # the killed one's socket is going away
        self.process = self.dev.spawn(log_file=self.log)
        await asyncio.to_thread(self.dev.wait_ready, self.process, 120.0)
        return time.monotonic() - started

    def kill(self) -> None:
        kill(self.process)

    def stop(self) -> None:
        """SIGTERM: the clean stop of an outage."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                kill(self.process)


@dataclass
class Worker:
    """`retrain worker`, restarted after each kill; `ready_at` is when its activities poll."""

    home: Path
    address: str
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    started_at: float = 0.0
    generation: int = 0
    history: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.generation += 1
        self.log = self.log_dir / f"worker-{self.generation}.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*RETRAIN, "--address", self.address, "worker"],
                env=child_env(self.home),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started_at = time.monotonic()
        self.history.append(self.process.pid)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def identity(self) -> str:
        """The SDK's default identity prefix of this process's client (`pid@host`)."""
        return f"{self.pid}@"

    def _logged(self, text: str) -> bool:
        return self.log is not None and text in self.log.read_text(errors="replace")

    async def wait_ready(self, timeout: float = 180.0) -> tuple[float, float]:
        """(seconds until its workflows polled, until its activities polled) since its start."""
        workflows: float | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the worker exited: see {self.log}")
            now = time.monotonic() - self.started_at
            if workflows is None and self._logged("workflows polling task queue"):
                workflows = now
            if self._logged("activities polling task queue"):
                return workflows or now, now
            await asyncio.sleep(0.1)
        raise TimeoutError(f"the worker was not ready in {timeout:.0f} s: see {self.log}")

    def kill(self) -> None:
        kill(self.process)


@dataclass
class Endpoint:
    """`retrain serve MODEL` on a fixed port, restarted on the same port after a kill."""

    home: Path
    model: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> float:
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*RETRAIN, "serve", self.model, "--home", str(self.home), "--port",
                 str(self.port), "--log-level", "info", "--seed", "7"],
                env=child_env(self.home),
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() - started < 180:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the endpoint exited: see {self.log}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}/healthz")).status_code == 200:
                        return time.monotonic() - started
                await asyncio.sleep(0.2)
        raise TimeoutError(f"the endpoint did not start: see {self.log}")

    def kill(self) -> None:
        kill(self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                kill(self.process)
