"""The stack of a chaos scenario, one process per part, each killed, stopped and restarted at will:
an embedded PostgreSQL and a Temporal dev server of its own (the test session's are never touched),
Caddy, the control worker (`worker.py`), a build host (`worker.py --build-host`, sandbox runner)
and the API (uvicorn). Everything listens on 127.0.0.1; every wait is bounded."""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from forgeline.embedded.children import build_host_environment
from forgeline.embedded.postgres import EmbeddedPostgres, free_port
from forgeline.embedded.temporal import EmbeddedTemporal
from forgeline.settings import BUILDS_TASK_QUEUE, PIPELINES_TASK_QUEUE, Settings
from forgeline.temporal_client import connect_temporal
from tests.deployments.proxy import CaddyProcess

ROOT = Path(__file__).resolve().parents[2]
# A throwaway cluster: durability against an OS crash is not what is tested here (a process crash
# or a stop loses nothing with these either).
PG_OPTIONS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "max_connections": "200",
}
# Variables of the product that must not leak in from the caller's environment.
INHERITED_OUT = ("DATABASE_URL", "TEMPORAL_ADDRESS", "MIGRATION_DATABASE_URL", "BUILD_DATABASE_URL")
READY_TIMEOUT = 90.0


def _die_with_parent() -> None:
    """In the child: killed when the test process dies, whatever way it dies (Linux prctl)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class StackProcess:
    """One of the stack's programs; its output appended to a log file across restarts."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts + 1} at {time.strftime('%X')}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.args,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.starts += 1

    def sigkill(self) -> None:
        assert self.process is not None and self.process.poll() is None, f"{self.name} is down"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=15)
        self.kills += 1

    def stop(self, timeout: float = 15) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def log_lines(self, needle: str, limit: int = 20) -> list[str]:
        """Lines of the log that contain `needle` (the last `limit` of them)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if needle in line][-limit:]


def run_migrations(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from db.session import async_database_url

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False  # keep pytest's logging setup
    config.set_main_option("script_location", str(ROOT / "db" / "migrations"))
    config.set_main_option("sqlalchemy.url", async_database_url(url).replace("%", "%%"))
    command.upgrade(config, "head")


class ChaosStack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.logs_dir = root / "logs"
        self.postgres = EmbeddedPostgres(
            root / "pg", free_port(), database="forgeline", server_options=PG_OPTIONS
        )
        # SQLite on disk: what the server knew survives its restart.
        self.temporal = EmbeddedTemporal(root / "temporal", port=free_port(), ui_port=None)
        self.caddy = CaddyProcess(root / "caddy")
        self.api_port = free_port()
        self.encryption_key = Fernet.generate_key().decode()
        # What was done to each part: kills, stops, restarts.
        self.events: Counter[str] = Counter()
        self.worker: StackProcess | None = None
        self.build_host: StackProcess | None = None
        self.api: StackProcess | None = None
        self.client: Client | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def settings(self) -> Settings:
        return Settings(
            environment="test",
            data_dir=self.data_dir,
            storage_dir=self.data_dir / "objects",
            database_url=self.postgres.app_url,
            build_database_url=self.postgres.build_url,
            temporal_address=self.temporal.address,
            temporal_namespace="default",
            encryption_keys=self.encryption_key,
            payload_keys=os.environ["FORGELINE_PAYLOAD_KEYS"],
            allow_local_repositories=True,
            container_runner="sandbox",
            proxy_admin_url=self.caddy.admin_url,
            proxy_http_port=self.caddy.http_port,
            api_host="127.0.0.1",
            api_port=self.api_port,
            public_base_url=self.api_url,
            log_level="WARNING",
        )

    def environment(self) -> dict[str, str]:
        """The control plane's environment (worker, API), as `make run` gives it."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("FORGELINE_") and name not in INHERITED_OUT
        }
        settings = self.settings
        env.update(
            {
                "FORGELINE_ENVIRONMENT": "test",
                "FORGELINE_DATA_DIR": str(self.data_dir),
                "FORGELINE_STORAGE_DIR": str(self.data_dir / "objects"),
                "FORGELINE_DATABASE_URL": self.postgres.app_url,
                "FORGELINE_TEMPORAL_ADDRESS": self.temporal.address,
                "FORGELINE_ENCRYPTION_KEYS": self.encryption_key,
                "FORGELINE_PAYLOAD_KEYS": os.environ["FORGELINE_PAYLOAD_KEYS"],
                "FORGELINE_CONTAINER_RUNNER": "sandbox",
                "FORGELINE_ALLOW_LOCAL_REPOSITORIES": "true",
                "FORGELINE_PROXY_ADMIN_URL": settings.proxy_admin_url,
                "FORGELINE_PROXY_HTTP_PORT": str(settings.proxy_http_port),
                "FORGELINE_API_HOST": "127.0.0.1",
                "FORGELINE_API_PORT": str(self.api_port),
                "FORGELINE_PUBLIC_BASE_URL": self.api_url,
                "FORGELINE_WORKER_SHUTDOWN_GRACE_SECONDS": "2",
                "FORGELINE_LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    # ------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        (self.data_dir / "objects").mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.postgres.start)
        await asyncio.to_thread(run_migrations, self.postgres.migrator_url)
        await asyncio.to_thread(self.temporal.start)
        await self.temporal.wait_ready(READY_TIMEOUT)
        await asyncio.to_thread(self.caddy.start)
        self.client = await connect_temporal(self.settings)
        env = self.environment()
        self.worker = StackProcess(
            "control-worker", [sys.executable, str(ROOT / "worker.py")], env, self._log("worker")
        )
        self.build_host = StackProcess(
            "build-host",
            [sys.executable, str(ROOT / "worker.py"), "--build-host"],
            build_host_environment(env, self.postgres.build_url),
            self._log("build-host"),
        )
        self.api = StackProcess(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.api_port),
                "--no-access-log",
            ],
            env,
            self._log("api"),
        )
        for process in (self.worker, self.build_host, self.api):
            process.start()
        await asyncio.gather(self.worker_ready(), self.build_host_ready(), self.api_ready())

    def _log(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def close(self) -> None:
        for process in (self.api, self.worker, self.build_host):
            if process is not None:
                process.stop()
        self.caddy.stop()
        self.temporal.stop()
        self.postgres.destroy()

    # ------------------------------------------------------------------------------- readiness

    async def _polled_by(self, queue: str, kind: TaskQueueType.ValueType, pid: int) -> bool:
        assert self.client is not None
        try:
            described = await self.client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace="default",
                    task_queue=TaskQueue(name=queue),
                    task_queue_type=kind,
                )
            )
        except Exception:  # the server may be starting: not yet
            return False
        return any(p.identity.startswith(f"{pid}@") for p in described.pollers)

    async def _wait_polling(
        self, process: StackProcess, queue: str, kind: TaskQueueType.ValueType
    ) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not await self._polled_by(queue, kind, process.pid):
            if not process.alive():
                raise AssertionError(
                    f"{process.name} exited before polling {queue}: "
                    + "\n".join(process.log_lines("", 30))
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{process.name} did not poll {queue} in {READY_TIMEOUT}s")
            await asyncio.sleep(0.2)

    async def worker_ready(self) -> None:
        assert self.worker is not None
        await self._wait_polling(
            self.worker, PIPELINES_TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
        )

    async def build_host_ready(self) -> None:
        assert self.build_host is not None
        await self._wait_polling(
            self.build_host, BUILDS_TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
        )

    async def api_ready(self) -> None:
        assert self.api is not None
        deadline = time.monotonic() + READY_TIMEOUT
        async with httpx.AsyncClient(base_url=self.api_url, timeout=5) as http:
            while True:
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if not self.api.alive() or time.monotonic() > deadline:
                    raise AssertionError(
                        "the API did not become healthy: " + "\n".join(self.api.log_lines("", 30))
                    )
                await asyncio.sleep(0.2)

    # ------------------------------------------------------------------------------- chaos

    async def kill_and_restart_worker(self, down_for: float = 1.0) -> None:
        assert self.worker is not None
        self.worker.sigkill()
        self.events["control worker SIGKILLed"] += 1
        await asyncio.sleep(down_for)
        self.worker.start()
        await self.worker_ready()

    async def kill_and_restart_build_host(self, down_for: float = 1.0) -> None:
        assert self.build_host is not None
        self.build_host.sigkill()
        self.events["build host SIGKILLed"] += 1
        await asyncio.sleep(down_for)
        self.build_host.start()
        await self.build_host_ready()

    async def stop_temporal(self) -> None:
        await asyncio.to_thread(self.temporal.stop)
        self.events["Temporal stopped"] += 1

    async def start_temporal(self) -> None:
        await asyncio.to_thread(self.temporal.start)
        await self.temporal.wait_ready(READY_TIMEOUT)

    async def stop_postgres(self) -> None:
        await asyncio.to_thread(self.postgres.stop)
        self.events["PostgreSQL stopped"] += 1

    async def start_postgres(self) -> None:
        await asyncio.to_thread(self.postgres.start)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
