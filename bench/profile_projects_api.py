"""Where a hot read's time goes in the API process: each projects scenario driven in-process
(straight ASGI calls, no sockets, one at a time) against the API and the bare baseline app, the
mean time per request of each, then a cProfile of the API's requests.

`uv run --frozen python -m bench.profile_projects_api [--requests N] [--top N]`: an embedded
PostgreSQL seeded as bench_projects_api seeds it; prints, returns nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import random
import shutil
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from bench.bench_projects_api import Tenant, api_paths, seed
from db.session import driver_dsn
from forgeline.embedded.postgres import EmbeddedPostgres, free_port


async def asgi_get(app: FastAPI, path: str, api_key: str) -> tuple[int, bytes]:
    """One GET through the app's ASGI interface, as uvicorn would call it."""
    raw_path, _, query = path.partition("?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {api_key}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    status = 0
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(body)


async def per_request_ms(
    app: FastAPI, tenants: list[Tenant], scenario: str, n: int
) -> tuple[float, float]:
    """Wall time and this process's CPU time per request (the CPU figure ignores PostgreSQL
    and other processes, so it holds on a busy machine)."""
    rnd = random.Random(1)
    cpu = time.process_time()
    began = time.perf_counter()
    for i in range(n):
        tenant = tenants[i % len(tenants)]
        status, body = await asgi_get(app, api_paths(tenant, rnd)[scenario], tenant.api_key)
        assert status == 200, (scenario, status, body[:200])
    wall = (time.perf_counter() - began) * 1000 / n
    return wall, (time.process_time() - cpu) * 1000 / n


async def main(requests: int, top: int) -> None:
    from api.app import create_app as create_api
    from bench import bare_api
    from forgeline.settings import Settings
    from forgeline.stack import run_migrations

    work = Path(tempfile.mkdtemp(prefix="fl-profile-"))
    server = EmbeddedPostgres(work / "pg", free_port())
    await asyncio.to_thread(server.start)
    try:
        await asyncio.to_thread(run_migrations, server.migrator_url)
        tenants = await seed(driver_dsn(server.app_url))
        os.environ["FORGELINE_BENCH_BARE_DSN"] = driver_dsn(server.app_url)
        settings = Settings(
            environment="development",
            database_url=server.app_url,
            temporal_address="127.0.0.1:1",
            log_level="WARNING",
            data_dir=work / "data",
        )
        api, bare = create_api(settings), bare_api.create_app()
        async with api.router.lifespan_context(api), bare.router.lifespan_context(bare):
            for scenario in api_paths(tenants[0], random.Random(0)):
                for app in (api, bare):  # warm: connections, statement caches
                    await per_request_ms(app, tenants, scenario, 200)
                api_ms, api_cpu = await per_request_ms(api, tenants, scenario, requests)
                bare_ms, bare_cpu = await per_request_ms(bare, tenants, scenario, requests)
                print(
                    f"{scenario}: api {api_ms:.2f} ms/request ({api_cpu:.2f} ms CPU), "
                    f"bare {bare_ms:.2f} ms/request ({bare_cpu:.2f} ms CPU), "
                    f"CPU api/bare {api_cpu / bare_cpu:.2f}x"
                )
            profiler = cProfile.Profile()
            profiler.enable()
            for scenario in api_paths(tenants[0], random.Random(0)):
                await per_request_ms(api, tenants, scenario, requests)
            profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top)
        print(out.getvalue())
    finally:
        await asyncio.to_thread(server.destroy)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.top))
