"""Projects API under load: 100k projects across 1k organizations, 100 concurrent keep-alive
clients against the API under uvicorn, side by side in the same run with a bare FastAPI + asyncpg
app serving the same endpoints with the same SQL (bench/bare_api.py), and with the same queries
sent straight through asyncpg (no HTTP) as context.

Run alone: `uv run python -m bench.run --only projects_api --skip-baseline`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.context import BenchContext, BenchRow
from bench.http_load import KeepAliveClient, LoadResult, run_load, start_uvicorn, stop
from core.accounts import security
from db.session import driver_dsn

ORGS = 1_000
PROJECTS_PER_ORG = 100
ENVIRONMENTS_PER_PROJECT = 2
CLIENTS = int(os.environ.get("FORGELINE_BENCH_CLIENTS", "100"))
REQUESTS_PER_CLIENT = int(os.environ.get("FORGELINE_BENCH_REQUESTS", "30"))
SEQUENTIAL_REQUESTS = 200
API_WORKERS = int(os.environ.get("FORGELINE_BENCH_API_WORKERS", "1"))
# Loaded rounds per side and scenario, the sides alternating (the machine's load drifts).
ROUNDS = int(os.environ.get("FORGELINE_BENCH_ROUNDS", "2"))
# Connections of each side (pool_size + max_overflow of the API's SQLAlchemy pool), split
# across the workers so every side has the same total and all three fit max_connections (100).
POOL_SIZE, POOL_OVERFLOW = 10, 20

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


# Which scenarios run, in which order (comma-separated names of RAW_SQL; default: all).
SCENARIOS = [
    name.strip()
    for name in os.environ.get("FORGELINE_BENCH_SCENARIOS", ",".join(RAW_SQL)).split(",")
    if name.strip()
]
assert set(SCENARIOS) <= set(RAW_SQL), f"FORGELINE_BENCH_SCENARIOS: one of {list(RAW_SQL)}"


@dataclass
class Tenant:
    org_id: uuid.UUID
    api_key: str
    project_ids: list[uuid.UUID]
    environment_ids: list[tuple[uuid.UUID, uuid.UUID]]  # (project_id, environment_id)


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


# --------------------------------------------------------------------------- the benchmark


async def _start_servers(
    database_url: str, temporal_address: str, metrics_dir: str
) -> dict[str, tuple[subprocess.Popen[bytes], int]]:
    """The API and the bare baseline, each under uvicorn with the same workers and settings."""
    api_env = {
        "FORGELINE_ENVIRONMENT": "development",
        "FORGELINE_DATABASE_URL": database_url,
        "FORGELINE_TEMPORAL_ADDRESS": temporal_address,
        "FORGELINE_LOG_LEVEL": "WARNING",
        "FORGELINE_DB_POOL_SIZE": str(max(1, POOL_SIZE // API_WORKERS)),
        "FORGELINE_DB_MAX_OVERFLOW": str(POOL_OVERFLOW // API_WORKERS),
    }
    if API_WORKERS > 1:
        # As forgeline.api_server runs several workers: metrics in multiprocess mode.
        api_env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    bare_env = {
        "FORGELINE_BENCH_BARE_DSN": driver_dsn(database_url),
        "FORGELINE_BENCH_BARE_POOL": str((POOL_SIZE + POOL_OVERFLOW) // API_WORKERS),
    }
    servers = {"api": await start_uvicorn("api.app:create_app", api_env, API_WORKERS)}
    try:
        servers["bare"] = await start_uvicorn("bench.bare_api:create_app", bare_env, API_WORKERS)
    except BaseException:
        stop(servers["api"][0])
        raise
    return servers


async def _warm_up(http: dict[str, list[KeepAliveClient]], tenants: list[Tenant]) -> None:
    """Connections, prepared statements, compiled-SQL caches, and the two apps' answers compared:
    the same items in the same JSON shape."""
    for side, clients in http.items():
        for i, tenant in enumerate(tenants):
            for path in api_paths(tenant, random.Random(i)).values():
                status, body = await clients[i].get(path)
                assert status == 200, (side, path, status, body[:200])
    for path in api_paths(tenants[0], random.Random(0)).values():
        api = json.loads((await http["api"][0].get(path))[1])
        bare = json.loads((await http["bare"][0].get(path))[1])
        if "items" in api:
            assert [i["id"] for i in api["items"]] == [i["id"] for i in bare["items"]], path
            assert bool(api["next_cursor"]) == bool(bare["next_cursor"]), path
            api, bare = api["items"][0], bare["items"][0]
        assert sorted(api) == sorted(bare), (path, sorted(api), sorted(bare))
        if "config" in api:
            assert sorted(api["config"]) == sorted(bare["config"]), path
    # The API refreshes api_keys.last_used_at at most once a minute per key: touch every key
    # now, so the measured rounds read.
    for index in range(len(tenants)):
        await http["api"][index].get("/v1/projects?limit=1")


def _rows(scenario: str, res: dict[str, LoadResult], one: dict[str, LoadResult]) -> list[BenchRow]:
    api, bare, raw = res["api"], res["bare"], res["raw"]
    load = "load avg {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    note = (
        f"{API_WORKERS} worker(s), {CLIENTS} clients x {REQUESTS_PER_CLIENT} x {ROUNDS} rounds, "
        f"errors api={api.errors} bare={bare.errors}, {load}"
    )
    print(
        f"  {scenario} (1 client p50): api {one['api'].pct(0.5):.2f} ms | bare "
        f"{one['bare'].pct(0.5):.2f} ms | raw {one['raw'].pct(0.5):.2f} ms",
        file=sys.stderr,
    )
    for side, r in res.items():
        print(
            f"  {scenario} [{side}]: p50 {r.pct(0.5):.1f} p95 {r.pct(0.95):.1f} "
            f"p99 {r.pct(0.99):.1f} ms, {r.rps:.0f} req/s",
            file=sys.stderr,
        )
    print(
        f"  {scenario}: api/bare p95 {api.pct(0.95) / bare.pct(0.95):.2f}x, "
        f"req/s {api.rps / bare.rps:.2f}x ({note})",
        file=sys.stderr,
    )
    name = f"projects api: {scenario}"
    rows = [BenchRow(name, "1 client p50 (bare as baseline)", one["api"].pct(0.5),
                     baseline=one["bare"].pct(0.5))]  # fmt: skip
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        rows.append(BenchRow(name, f"latency {label} (bare FastAPI as baseline)", api.pct(q),
                             baseline=bare.pct(q), note=note))  # fmt: skip
    rows.append(BenchRow(name, "throughput (bare FastAPI as baseline)", api.rps, unit="req/s",
                         baseline=bare.rps))  # fmt: skip
    rows.append(BenchRow(name, "throughput (raw asyncpg, no HTTP, as baseline)", api.rps,
                         unit="req/s", baseline=raw.rps))  # fmt: skip
    rows.append(BenchRow(name, "mean latency (bare as baseline)",
                         statistics.fmean(api.latencies_ms),
                         baseline=statistics.fmean(bare.latencies_ms)))  # fmt: skip
    return rows


async def run(ctx: BenchContext) -> list[BenchRow]:
    database_url = await ctx.database_url()
    dsn = driver_dsn(database_url)
    tenants = await seed(dsn)
    metrics_dir = tempfile.mkdtemp(prefix="fl-bench-metrics-")
    servers = await _start_servers(database_url, ctx.temporal_address, metrics_dir)
    rows: list[BenchRow] = []
    pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE + POOL_OVERFLOW,
                                     max_size=POOL_SIZE + POOL_OVERFLOW)  # fmt: skip
    http = {
        side: [KeepAliveClient("127.0.0.1", port, t.api_key) for t in tenants]
        for side, (_, port) in servers.items()
    }
    try:
        await _warm_up(http, tenants)
        for scenario in SCENARIOS:
            sql = RAW_SQL[scenario]

            def over_http(side: str) -> Callable[[int, Tenant, random.Random], Awaitable[bool]]:
                async def call(index: int, tenant: Tenant, rnd: random.Random) -> bool:
                    path = api_paths(tenant, rnd)[scenario]  # noqa: B023
                    status, _ = await http[side][index].get(path)
                    return status == 200

                return call

            async def raw_call(index: int, tenant: Tenant, rnd: random.Random) -> bool:
                async with pool.acquire() as conn:
                    records = await conn.fetch(sql, *raw_args(tenant, rnd)[scenario])  # noqa: B023
                return bool(records)

            calls = {"api": over_http("api"), "bare": over_http("bare"), "raw": raw_call}
            # One client first: the per-request floor without queueing.
            one = {s: await run_load(tenants[:1], c, SEQUENTIAL_REQUESTS) for s, c in calls.items()}
            # Then all clients, the sides alternating round by round so they share the load
            # the machine has at the time.
            results: dict[str, LoadResult] = {}
            for round_index in range(ROUNDS):
                order = list(calls) if round_index % 2 == 0 else list(reversed(calls))
                for side in order:
                    r = await run_load(tenants, calls[side], REQUESTS_PER_CLIENT)
                    results[side] = results[side].merge(r) if side in results else r
            rows += _rows(scenario, {s: results[s] for s in calls}, one)
    finally:
        for clients in http.values():
            for client in clients:
                await client.close()
        await pool.close()
        for process, _ in servers.values():
            stop(process)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return rows
