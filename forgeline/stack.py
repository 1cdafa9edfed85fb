"""`make run`: the whole Forgeline stack on one machine, with embedded Temporal and PostgreSQL.

Starts the services that are not configured externally (TEMPORAL_ADDRESS / DATABASE_URL), migrates,
seeds, bootstraps an organization, then runs worker.py and the API as child processes until
Ctrl-C. All state lives under the data dir (`.data/`), so the next run finds it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.accounts.bootstrap import ensure_bootstrap
from core.billing.schedules import ensure_billing_schedules
from db.seed import seed_reference_data as seed_reference_rows
from db.session import (
    async_database_url,
    create_engine,
    create_session_maker,
    migration_database_url,
    session_scope,
)
from forgeline.embedded.children import ChildProcesses, build_host_environment
from forgeline.embedded.data_dir import (
    development_encryption_key,
    development_payload_key_env,
    secure_data_dir,
)
from forgeline.embedded.postgres import EmbeddedPostgres, port_open
from forgeline.embedded.temporal import EmbeddedTemporal, wait_for_temporal
from forgeline.settings import Settings
from forgeline.temporal_client import connect_temporal, temporal_target
from infra.proxy_routes import embedded_caddy_command, public_url

log = logging.getLogger("forgeline.stack")
ROOT = Path(__file__).resolve().parent.parent


def run_migrations(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "db" / "migrations"))
    config.set_main_option("sqlalchemy.url", async_database_url(url).replace("%", "%%"))
    command.upgrade(config, "head")


async def seed_reference_data(session_maker: async_sessionmaker[AsyncSession]) -> None:
    """Idempotent reference data (plans and plan features), one unit of work."""
    async with session_scope(session_maker) as session:
        await seed_reference_rows(session)
    print("Seeded reference data (plans, plan features)", flush=True)


def _as_dict(result: Any) -> dict[str, Any]:
    if result is None:
        return {}
    if hasattr(result, "model_dump"):
        return dict(result.model_dump(mode="json"))
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {k: v for k, v in dataclasses.asdict(result).items()}
    if isinstance(result, dict):
        return dict(result)
    return {"result": str(result)}


def bootstrap_display(settings: Settings, result: Any) -> dict[str, Any]:
    """What to print: the bootstrap result, plus what `.data/bootstrap.json` kept from run one."""
    path = settings.data_dir / "bootstrap.json"
    saved: dict[str, Any] = {}
    if path.exists():
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(path.read_text())
    fresh = {k: v for k, v in _as_dict(result).items() if v is not None}
    shown = {**saved, **fresh}
    shown.pop("created", None)
    return {k: str(v) for k, v in shown.items()}


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.temporal: EmbeddedTemporal | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.children = ChildProcesses()
        self.env: dict[str, str] = dict(os.environ)

    async def start_services(self) -> None:
        settings = self.settings
        data_dir = settings.data_dir.absolute()
        secure_data_dir(data_dir)
        key = development_encryption_key(settings)
        if key:
            self.env["FORGELINE_ENCRYPTION_KEYS"] = key
        payload_key = development_payload_key_env(settings)
        if payload_key:
            self.env["FORGELINE_PAYLOAD_KEYS"] = payload_key
        self.env.setdefault("FORGELINE_ALLOW_LOCAL_REPOSITORIES", "true")
        self.env["FORGELINE_DATA_DIR"] = str(data_dir)

        if settings.temporal_address:
            print(f"Temporal: using {settings.temporal_address}", flush=True)
        else:
            self.temporal = EmbeddedTemporal(
                data_dir / "temporal",
                port=settings.embedded_temporal_port,
                ui_port=settings.embedded_temporal_ui_port,
                namespace=settings.temporal_namespace,
            )
            self.temporal.data_dir.mkdir(mode=0o700, exist_ok=True)
            print(f"Temporal: starting dev server ({self.temporal.db_file})", flush=True)
            await asyncio.to_thread(self.temporal.start)
            self.env["FORGELINE_TEMPORAL_ADDRESS"] = self.temporal.address
        await wait_for_temporal(temporal_target(settings), settings.temporal_namespace, 60)

        if settings.database_url:
            print("PostgreSQL: using DATABASE_URL", flush=True)
        else:
            self.postgres = EmbeddedPostgres(
                data_dir / "postgres",
                settings.embedded_postgres_port,
                database="forgeline",
                bin_dir=settings.pg_bin_dir,
            )
            port = settings.embedded_postgres_port
            if port_open("127.0.0.1", port) and not self.postgres.is_running():
                raise RuntimeError(
                    f"port {settings.embedded_postgres_port} is taken by another process"
                )
            print(f"PostgreSQL: starting embedded server ({self.postgres.data_dir})", flush=True)
            await asyncio.to_thread(self.postgres.start)
            # The API and workers connect as the application role (rows only, no DDL).
            self.env["FORGELINE_DATABASE_URL"] = self.postgres.app_url
            self.env.pop("DATABASE_URL", None)

        url = self.postgres.migrator_url if self.postgres else migration_database_url(settings)
        # Only migrations hold the schema owner's credentials, never the API or a worker.
        for name in ("FORGELINE_MIGRATION_DATABASE_URL", "MIGRATION_DATABASE_URL"):
            self.env.pop(name, None)
        print("Migrating: alembic upgrade head", flush=True)
        await asyncio.to_thread(run_migrations, url)

    def child_settings(self) -> Settings:
        """The settings the children will see, for in-process seeding and bootstrap."""
        update: dict[str, Any] = {
            "data_dir": self.settings.data_dir.absolute(),
            "allow_local_repositories": True,
        }
        if "FORGELINE_ENCRYPTION_KEYS" in self.env:
            update["encryption_keys"] = SecretStr(self.env["FORGELINE_ENCRYPTION_KEYS"])
        if self.postgres:
            update["database_url"] = self.postgres.app_url
            update["build_database_url"] = self.postgres.build_url
        if self.temporal:
            update["temporal_address"] = self.temporal.address
        return self.settings.model_copy(update=update)

    async def prepare_data(self) -> dict[str, Any]:
        settings = self.child_settings()
        engine = create_engine(settings)
        session_maker = create_session_maker(engine)
        shown: dict[str, Any] = {}
        try:
            await seed_reference_data(session_maker)
            result = await ensure_bootstrap(session_maker, settings)
            shown = bootstrap_display(settings, result)
            client = await connect_temporal(settings)
            await ensure_billing_schedules(client, session_maker)
            print("Billing schedules ensured", flush=True)
        finally:
            await engine.dispose()
        return shown

    def start_children(self) -> None:
        settings = self.settings
        caddy = embedded_caddy_command(
            admin_url=settings.proxy_admin_url,
            http_host=settings.api_host,
            http_port=settings.proxy_http_port,
            state_dir=settings.data_dir.absolute() / "caddy",
        )
        if caddy is not None:
            # The reverse proxy of Docker deployments (scripts/ensure-caddy.sh installs it).
            caddy_env = {**self.env, "XDG_CONFIG_HOME": str(settings.data_dir.absolute() / "caddy")}
            self.children.start("caddy", caddy, caddy_env)
        self.children.start("worker", [sys.executable, str(ROOT / "worker.py")], self.env)
        # Stages run in a process of their own, which holds no key (a second machine can run it).
        build_url = self.postgres.build_url if self.postgres else settings.build_database_url
        self.children.start(
            "build-host",
            [sys.executable, str(ROOT / "worker.py"), "--build-host"],
            build_host_environment(self.env, build_url),
        )
        self.children.start(
            "api",
            # FORGELINE_API_WORKERS processes (default: one per core) behind the one port.
            [
                sys.executable,
                "-m",
                "forgeline.api_server",
                "--host",
                settings.api_host,
                "--port",
                str(settings.api_port),
                "--no-access-log",
            ],
            self.env,
        )

    def stop(self) -> None:
        print("\nStopping: worker and API ...", flush=True)
        self.children.stop(self.settings.worker_shutdown_grace_seconds + 10)
        if self.temporal:
            print("Stopping: Temporal ...", flush=True)
            self.temporal.stop()
        if self.postgres:
            print("Stopping: PostgreSQL ...", flush=True)
            self.postgres.stop()
        print("Stopped. Data kept in", self.settings.data_dir.absolute(), flush=True)


def builds_description(settings: Settings) -> str:
    """Where stages run, as the build host will choose (`FORGELINE_CONTAINER_RUNNER`)."""
    from infra.runners import sandbox_config
    from infra.runners.sandbox_runner import sandbox_works

    choice = settings.container_runner
    if choice == "unsafe-local":
        return "UNISOLATED local processes (FORGELINE_CONTAINER_RUNNER=unsafe-local)"
    if choice == "docker":
        return "Docker containers"
    why_not = sandbox_works(sandbox_config(settings))
    if why_not is None:
        return "isolated sandbox (bubblewrap; egress through the build proxy)"
    return f"sandbox unavailable ({why_not}); Docker if an engine answers"


def banner(settings: Settings, shown: dict[str, Any]) -> str:
    api = f"http://localhost:{settings.api_port}"
    ui = (
        f"http://localhost:{settings.embedded_temporal_ui_port}"
        if not settings.temporal_address
        else "(your Temporal's own UI)"
    )
    lines = [
        "",
        "Forgeline is running",
        f"  Web console    {api}/",
        f"  API            {api}",
        f"  OpenAPI docs   {api}/docs",
        f"  Health         {api}/healthz",
        f"  Temporal UI    {ui}",
        f"  Temporal gRPC  {temporal_target(settings)}",
        "  Deployed apps  "
        + public_url(f"<environment>.<project>.{settings.apps_domain}", settings.proxy_http_port),
        f"  Builds         {builds_description(settings)}",
    ]
    if shown:
        lines.append("  Bootstrap organization (kept in .data/bootstrap.json):")
        lines += [f"    {key:<16} {value}" for key, value in shown.items()]
        if shown.get("api_key"):
            lines.append(
                f'  Try: curl -H "Authorization: Bearer {shown["api_key"]}" {api}/v1/projects'
            )
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


API_READY_TIMEOUT_SECONDS = 120.0


def _reachable(host: str) -> str:
    """Where this machine reaches a server bound to `host` (all interfaces: loopback)."""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_unspecified:
            return "127.0.0.1"
    return host or "127.0.0.1"


async def api_answers(settings: Settings, stack: Stack, stop: asyncio.Event) -> bool:
    """Until the API answers its health check (any status), a child exits, Ctrl-C, or the
    timeout; True when it answered."""
    url = f"http://{_reachable(settings.api_host)}:{settings.api_port}/healthz"
    deadline = asyncio.get_running_loop().time() + API_READY_TIMEOUT_SECONDS
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while asyncio.get_running_loop().time() < deadline:
            if stop.is_set() or stack.children.exited():
                return False
            with contextlib.suppress(httpx.HTTPError):
                await client.get(url)
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.25)
    return False


async def serve(settings: Settings, ready: Callable[[Stack], Awaitable[None]] | None = None) -> int:
    stack = Stack(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    status = 0
    try:
        await stack.start_services()
        if stop.is_set():
            return 0
        shown = await stack.prepare_data()
        stack.start_children()
        # The banner says "running" once the API answers: its worker processes take a few
        # seconds to import, and a command typed right after the banner must not be refused.
        answered = await api_answers(settings, stack, stop)
        if stop.is_set():
            return 0
        if not answered and not stack.children.exited():
            print("The API has not answered yet: it may still be starting", flush=True)
        print(banner(settings, shown), flush=True)
        if ready:
            await ready(stack)
        while not stop.is_set():
            exited = stack.children.exited()
            if exited:
                for name, code in exited:
                    print(f"{name} exited with status {code}; stopping the stack", flush=True)
                status = 1
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1)
    finally:
        await asyncio.to_thread(stack.stop)
    return status


async def migrate(settings: Settings) -> int:
    """`make migrate`: upgrade and seed the configured or embedded database."""
    pg: EmbeddedPostgres | None = None
    was_running = True
    if not settings.database_url:
        secure_data_dir(settings.data_dir.absolute())
        pg = EmbeddedPostgres(
            settings.data_dir.absolute() / "postgres",
            settings.embedded_postgres_port,
            bin_dir=settings.pg_bin_dir,
        )
        was_running = pg.is_running()
        pg.start()
    url = pg.migrator_url if pg else migration_database_url(settings)
    try:
        await asyncio.to_thread(run_migrations, url)
        engine = create_engine(settings, url=pg.app_url if pg else None)
        try:
            await seed_reference_data(create_session_maker(engine))
        finally:
            await engine.dispose()
    finally:
        if pg and not was_running:
            pg.stop()
    return 0


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    settings = Settings()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    if args[:1] == ["migrate"]:
        sys.exit(asyncio.run(migrate(settings)))
    try:
        status = asyncio.run(serve(settings))
    except (RuntimeError, TimeoutError, OSError) as exc:
        # Services already started were stopped by serve(); say what went wrong in one line.
        print(f"Forgeline could not start: {exc}", file=sys.stderr)
        status = 1
    sys.exit(status)


if __name__ == "__main__":
    main()
