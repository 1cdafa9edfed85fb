"""The API as `make run` and the image start it (`python -m forgeline.api_server`), in a process of
its own on a loopback port, against the test session's database and Temporal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from forgeline.embedded.postgres import free_port
from forgeline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def api_environment(settings: Settings, workers: int) -> dict[str, str]:
    """The parent's environment without its FORGELINE_* settings, then the test session's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGELINE_")}
    env.update(
        {
            "FORGELINE_ENVIRONMENT": "test",
            "FORGELINE_DATA_DIR": str(settings.data_dir),
            "FORGELINE_STORAGE_DIR": str(settings.objects_dir),
            "FORGELINE_DATABASE_URL": str(settings.database_url),
            "FORGELINE_TEMPORAL_ADDRESS": str(settings.temporal_address),
            "FORGELINE_TEMPORAL_NAMESPACE": settings.temporal_namespace,
            "FORGELINE_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
            "FORGELINE_PAYLOAD_KEYS": os.environ["FORGELINE_PAYLOAD_KEYS"],
            "FORGELINE_ALLOW_LOCAL_REPOSITORIES": "true",
            "FORGELINE_LOG_LEVEL": "WARNING",
            "FORGELINE_API_WORKERS": str(workers),
        }
    )
    return env


class ApiProcess:
    """`python -m forgeline.api_server` with `workers` worker processes; its output goes to
    `log_path`."""

    def __init__(self, settings: Settings, log_path: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.env = api_environment(settings, workers)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60) -> ApiProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "forgeline.api_server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--no-access-log",
                ],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, self.log_path.read_text()[-3000:]
            time.sleep(0.1)

    def workers(self) -> list[int]:
        """PIDs of the server's worker processes (its spawned children)."""
        found: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = next(
                (int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")),
                0,
            )
            if ppid == self.pid and b"multiprocessing.spawn" in cmdline:
                found.append(int(entry.name))
        return sorted(found)

    def stop(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
