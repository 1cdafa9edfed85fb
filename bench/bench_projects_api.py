"""Projects API under load: 100k projects across 1k organizations, 100 concurrent clients against
a real uvicorn process, side by side with the same queries sent straight through asyncpg.

Run alone: `uv run python -m bench.run --only projects_api --skip-baseline`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from bench.context import BenchContext, BenchRow
from core.accounts import security
from db.session import driver_dsn

ORGS = 1_000
PROJECTS_PER_ORG = 100
ENVIRONMENTS_PER_PROJECT = 2
CLIENTS = int(os.environ.get("FORGELINE_BENCH_CLIENTS", "100"))
REQUESTS_PER_CLIENT = int(os.environ.get("FORGELINE_BENCH_REQUESTS", "30"))
SEQUENTIAL_REQUESTS = 200
API_WORKERS = int(os.environ.get("FORGELINE_BENCH_API_WORKERS", "1"))
# The API process's SQLAlchemy pool (pool_size + max_overflow); the raw pool gets the same.
POOL_SIZE, POOL_OVERFLOW = 10, 20
ROOT = Path(__file__).resolve().parent.parent

PROJECT_COLUMNS = (
    "id, organization_id, owner_user_id, created_by_user_id, name, slug, description, "
    "project_type, framework, config, status, archived_at, created_at, updated_at"
)
ENV_COLUMNS = (
    "e.id, e.project_id, e.name, e.env_type, e.provider, e.config, e.url, e.is_protected, "
    "e.required_approvals, e.auto_deploy, e.preview_branch, e.preview_pr_number, e.expires_at, "
    "e.status, e.created_at, e.updated_at"
)
RAW_SQL = {
    "list projects": f"SELECT {PROJECT_COLUMNS} FROM projects WHERE organization_id = $1 "
    "AND status <> 'archived' ORDER BY created_at DESC, id DESC LIMIT 51",
    "get project": f"SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1 AND organization_id = $2",
    "list environments": f"SELECT {ENV_COLUMNS} FROM environments e JOIN projects p "
    "ON p.id = e.project_id WHERE e.project_id = $1 AND p.organization_id = $2 "
    "ORDER BY e.created_at DESC, e.id DESC LIMIT 51",
    "get environment": f"SELECT {ENV_COLUMNS} FROM environments e JOIN projects p "
    "ON p.id = e.project_id WHERE e.id = $1 AND p.organization_id = $2",
}


@dataclass
class Tenant:
    org_id: uuid.UUID
    api_key: str
    project_ids: list[uuid.UUID]
    environment_ids: list[tuple[uuid.UUID, uuid.UUID]]  # (project_id, environment_id)


@dataclass
class LoadResult:
    latencies_ms: list[float]
    wall_s: float
    errors: int

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.wall_s


# --------------------------------------------------------------------------- seeding


async def seed(dsn: str) -> list[Tenant]:
    """Bulk-load with COPY: organizations, projects, environments, and one key per client org."""
    rnd = random.Random(42)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    orgs = [uuid.uuid4() for _ in range(ORGS)]
    projects: list[tuple[object, ...]] = []
    environments: list[tuple[object, ...]] = []
    by_org: dict[uuid.UUID, Tenant] = {}
    types = ("static_site", "ssr_app", "spa", "api", "fullstack")
    frameworks = ("nextjs", "react", "vue", "django", "go", "astro")
    for o, org_id in enumerate(orgs):
        tenant = Tenant(org_id, "", [], [])
        by_org[org_id] = tenant
        for p in range(PROJECTS_PER_ORG):
            project_id = uuid.uuid4()
            ts = start + timedelta(seconds=o * PROJECTS_PER_ORG + p)
            projects.append(
                (
                    project_id, org_id, f"Project {p}", f"project-{p}", rnd.choice(types),
                    rnd.choice(frameworks), '{"build_command": "npm run build"}',
                    "archived" if p % 25 == 0 else "active", ts, ts,
                )
            )  # fmt: skip
            tenant.project_ids.append(project_id)
            for e in range(ENVIRONMENTS_PER_PROJECT):
                env_id = uuid.uuid4()
                env_type = ("staging", "production")[e % 2]
                environments.append(
                    (env_id, project_id, env_type, env_type, "static", "{}", ts, ts)
                )
                tenant.environment_ids.append((project_id, env_id))
    clients = [by_org[org_id] for org_id in orgs[:CLIENTS]]
    keys = []
    for tenant in clients:
        new = security.generate_api_key()
        tenant.api_key = new.raw
        keys.append(
            (uuid.uuid4(), tenant.org_id, "bench", new.prefix, new.hash,
             ["projects:read", "environments:read"], 1_000_000)
        )  # fmt: skip

    conn = await asyncpg.connect(dsn)
    try:
        began = time.perf_counter()
        await conn.copy_records_to_table(
            "organizations",
            records=[
                (org_id, f"Org {i}", f"org-{i}-{org_id.hex[:6]}") for i, org_id in enumerate(orgs)
            ],
            columns=["id", "name", "slug"],
        )
        await conn.copy_records_to_table(
            "projects",
            records=projects,
            columns=["id", "organization_id", "name", "slug", "project_type", "framework",
                     "config", "status", "created_at", "updated_at"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "environments",
            records=environments,
            columns=["id", "project_id", "name", "env_type", "provider", "config",
                     "created_at", "updated_at"],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "api_keys",
            records=keys,
            columns=["id", "organization_id", "name", "key_prefix", "key_hash", "scopes",
                     "rate_limit_per_minute"],
        )  # fmt: skip
        for table in ("organizations", "projects", "environments", "api_keys"):
            await conn.execute(f"ANALYZE {table}")
        print(
            f"  seeded {len(projects)} projects, {len(environments)} environments in "
            f"{time.perf_counter() - began:.1f}s",
            file=sys.stderr,
        )
    finally:
        await conn.close()
    return clients


# --------------------------------------------------------------------------- load generation


class KeepAliveClient:
    """A minimal HTTP/1.1 keep-alive GET client, so the load generator's own CPU cost stays
    small next to the server's (both share the machine)."""

    def __init__(self, host: str, port: int, api_key: str) -> None:
        self.host, self.port, self.api_key = host, port, api_key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        try:
            return await self._get(path)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closed an idle keep-alive connection: reconnect once.
            await self.close()
            return await self._get(path)

    async def _get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {self.api_key}\r\nAccept: application/json\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value.strip())
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_load(
    clients: list[Tenant],
    request: Callable[[int, Tenant, random.Random], Awaitable[bool]],
    requests_per_client: int = REQUESTS_PER_CLIENT,
) -> LoadResult:
    latencies: list[float] = []
    errors = 0

    async def one_client(index: int, tenant: Tenant) -> None:
        nonlocal errors
        rnd = random.Random(index)
        for _ in range(requests_per_client):
            began = time.perf_counter()
            ok = await request(index, tenant, rnd)
            latencies.append((time.perf_counter() - began) * 1000)
            errors += 0 if ok else 1

    began = time.perf_counter()
    await asyncio.gather(*(one_client(i, t) for i, t in enumerate(clients)))
    return LoadResult(latencies, time.perf_counter() - began, errors)


def api_paths(tenant: Tenant, rnd: random.Random) -> dict[str, str]:
    project_id = rnd.choice(tenant.project_ids)
    env_project, env_id = rnd.choice(tenant.environment_ids)
    return {
        "list projects": "/v1/projects?limit=50",
        "get project": f"/v1/projects/{project_id}",
        "list environments": f"/v1/projects/{env_project}/environments?limit=50",
        "get environment": f"/v1/environments/{env_id}",
    }


def raw_args(tenant: Tenant, rnd: random.Random) -> dict[str, tuple[object, ...]]:
    project_id = rnd.choice(tenant.project_ids)
    env_project, env_id = rnd.choice(tenant.environment_ids)
    return {
        "list projects": (tenant.org_id,),
        "get project": (project_id, tenant.org_id),
        "list environments": (env_project, tenant.org_id),
        "get environment": (env_id, tenant.org_id),
    }


# --------------------------------------------------------------------------- the API process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_api(
    database_url: str, temporal_address: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {
        **os.environ,
        "FORGELINE_ENVIRONMENT": "development",
        "FORGELINE_DATABASE_URL": database_url,
        "FORGELINE_TEMPORAL_ADDRESS": temporal_address,
        "FORGELINE_LOG_LEVEL": "WARNING",
        "FORGELINE_DB_POOL_SIZE": str(POOL_SIZE),
        "FORGELINE_DB_MAX_OVERFLOW": str(POOL_OVERFLOW),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(API_WORKERS),
         "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
         "--timeout-keep-alive", "600"],
        cwd=ROOT,
        env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            writer.close()
            return process, port
        except (OSError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.2)
    process.terminate()
    raise RuntimeError("the API did not start")


# --------------------------------------------------------------------------- the benchmark


async def run(ctx: BenchContext) -> list[BenchRow]:
    database_url = await ctx.database_url()
    dsn = driver_dsn(database_url)
    tenants = await seed(dsn)
    process, port = await start_api(database_url, ctx.temporal_address)
    rows: list[BenchRow] = []
    pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE + POOL_OVERFLOW,
                                     max_size=POOL_SIZE + POOL_OVERFLOW)  # fmt: skip
    http = [KeepAliveClient("127.0.0.1", port, t.api_key) for t in tenants]
    try:
        # Warm up: connections, prepared statements, compiled-SQL caches, response sanity.
        for i, tenant in enumerate(tenants):
            for path in api_paths(tenant, random.Random(i)).values():
                status, body = await http[i].get(path)
                assert status == 200, (path, status, body[:200])
        first = json.loads((await http[0].get("/v1/projects?limit=50"))[1])
        assert len(first["items"]) == 50 and first["next_cursor"]

        for scenario, sql in RAW_SQL.items():

            async def api_call(index: int, tenant: Tenant, rnd: random.Random) -> bool:
                status, _ = await http[index].get(api_paths(tenant, rnd)[scenario])  # noqa: B023
                return status == 200

            async def raw_call(index: int, tenant: Tenant, rnd: random.Random) -> bool:
                async with pool.acquire() as conn:
                    records = await conn.fetch(sql, *raw_args(tenant, rnd)[scenario])  # noqa: B023
                return bool(records)

            # One client first: the per-request floor without queueing.
            api_1 = await run_load(tenants[:1], api_call, SEQUENTIAL_REQUESTS)
            raw_1 = await run_load(tenants[:1], raw_call, SEQUENTIAL_REQUESTS)
            # Sequential touch of every key first: the API refreshes api_keys.last_used_at at
            # most once a minute per key on a *second* pooled connection, and 100 keys doing it
            # at once exhaust the pool (requests hold one connection, wait for another) until
            # the 30 s pool timeout. Reported to api-core; this keeps the run measuring reads.
            for index in range(len(tenants)):
                await http[index].get("/v1/projects?limit=1")
            api = await run_load(tenants, api_call)
            raw = await run_load(tenants, raw_call)
            note = (
                f"{CLIENTS} clients x {REQUESTS_PER_CLIENT}, "
                f"errors api={api.errors} raw={raw.errors}"
            )
            print(
                f"  {scenario} (1 client): api p50 {api_1.pct(0.5):.2f} ms | raw p50 "
                f"{raw_1.pct(0.5):.2f} ms",
                file=sys.stderr,
            )
            print(
                f"  {scenario}: api p50 {api.pct(0.5):.1f} p95 {api.pct(0.95):.1f} "
                f"p99 {api.pct(0.99):.1f} ms {api.rps:.0f} req/s | raw p50 {raw.pct(0.5):.2f} "
                f"p95 {raw.pct(0.95):.2f} p99 {raw.pct(0.99):.2f} ms {raw.rps:.0f} q/s",
                file=sys.stderr,
            )
            name = f"projects api: {scenario}"
            rows.append(BenchRow(name, "1 client latency p50 (raw as baseline)", api_1.pct(0.5),
                                 baseline=raw_1.pct(0.5)))  # fmt: skip
            for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
                rows.append(BenchRow(name, f"latency {label} (raw asyncpg as baseline)",
                                     api.pct(q), baseline=raw.pct(q), note=note))  # fmt: skip
            rows.append(BenchRow(name, "throughput (raw as baseline)", api.rps, unit="req/s",
                                 baseline=raw.rps))  # fmt: skip
            rows.append(BenchRow(name, "mean latency", statistics.fmean(api.latencies_ms),
                                 baseline=statistics.fmean(raw.latencies_ms)))  # fmt: skip
    finally:
        for client in http:
            await client.close()
        await pool.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    return rows
