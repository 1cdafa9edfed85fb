"""More than one API process against one database: an API key's rate limit and the sign-in
throttle hold across them (real processes, started as `make run` starts the API), and the
server runs the configured number of workers, one of which may die without the API going
down."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from db.models.accounts import ApiKeyRateWindow
from forgeline.api_server import api_workers, available_cores, cgroup_cpu_limit
from forgeline.settings import Settings
from tests.api_process import ApiProcess
from tests.factories import make_org


@pytest.fixture
def two_apis(settings: Settings, tmp_path: Path) -> Iterator[list[ApiProcess]]:
    apis = [ApiProcess(settings, tmp_path / f"api-{n}.log") for n in range(2)]
    try:
        for api in apis:
            api.start()
        yield apis
    finally:
        for api in apis:
            api.stop()


async def test_a_keys_rate_limit_holds_across_two_api_processes(
    two_apis: list[ApiProcess], session_maker
) -> None:
    org = await make_org(session_maker, rate_limit_per_minute=6)
    one, two = (httpx.AsyncClient(base_url=api.url, timeout=30) for api in two_apis)
    async with one, two:
        answers = [await api.get("/v1/me", headers=org.headers) for api in (one, two) * 6]
        assert [a.status_code for a in answers] == [200] * 6 + [429] * 6
        limited = answers[-1]
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.headers["content-type"].startswith("application/problem+json")

        # A burst at once on both processes: exactly the limit passes.
        burst = await make_org(session_maker, rate_limit_per_minute=10)
        statuses = await asyncio.gather(
            *(api.get("/v1/me", headers=burst.headers) for api in (one, two) * 15)
        )
        assert Counter(s.status_code for s in statuses) == {200: 10, 429: 20}

        # Hostile: a forged key on the counted key's prefix is refused and never counted.
        fresh = await make_org(session_maker, rate_limit_per_minute=2)
        forged = fresh.api_key[:-6] + ("A" * 6 if fresh.api_key[-6:] != "A" * 6 else "B" * 6)
        for api in (one, two):
            bad = await api.get("/v1/me", headers={"Authorization": f"Bearer {forged}"})
            assert bad.status_code == 401
        assert (await one.get("/v1/me", headers=fresh.headers)).status_code == 200
        assert (await two.get("/v1/me", headers=fresh.headers)).status_code == 200
        assert (await one.get("/v1/me", headers=fresh.headers)).status_code == 429
    # The table keeps at most this minute and the last per key.
    async with session_maker() as session:
        rows = await session.scalar(
            select(func.count()).where(ApiKeyRateWindow.api_key_id == org.api_key_id)
        )
    assert rows is not None and 1 <= rows <= 2


async def test_the_login_throttle_holds_across_two_api_processes(
    two_apis: list[ApiProcess], session_maker
) -> None:
    owner = await make_org(session_maker)
    one, two = (httpx.AsyncClient(base_url=api.url, timeout=30) for api in two_apis)
    async with one, two:

        async def attempt(api: httpx.AsyncClient, password: str) -> int:
            body = {"email": owner.email, "password": password}
            return (await api.post("/v1/auth/login", json=body)).status_code

        statuses = [await attempt(api, "guess guess") for api in (one, two) * 6]
        assert statuses == [401] * 10 + [429, 429]
        # The right password from the same address waits too (per account and address).
        assert await attempt(two, owner.password) == 429


def test_the_server_runs_its_workers_and_survives_losing_one(
    settings: Settings, tmp_path: Path
) -> None:
    api = ApiProcess(settings, tmp_path / "api.log", workers=2).start()
    try:
        deadline = time.monotonic() + 60
        while len(api.workers()) < 2:
            assert time.monotonic() < deadline, api.log_path.read_text()[-3000:]
            time.sleep(0.1)
        first = api.workers()
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        # The other worker answers at once; the server starts a replacement.
        for _ in range(10):
            assert httpx.get(f"{api.url}/healthz", timeout=30).status_code == 200
        while True:
            now = api.workers()
            if len(now) == 2 and first[0] not in now:
                break
            assert time.monotonic() < deadline + 60, api.log_path.read_text()[-3000:]
            time.sleep(0.1)
        assert httpx.get(f"{api.url}/healthz", timeout=30).status_code == 200
    finally:
        api.stop()
    assert api.workers() == []


def test_the_worker_count_defaults_to_the_cores_and_refuses_nonsense(
    settings: Settings, tmp_path: Path
) -> None:
    assert api_workers(settings.model_copy(update={"api_workers": None})) == available_cores()
    assert api_workers(settings.model_copy(update={"api_workers": 3})) == 3
    cpu_max = tmp_path / "cpu.max"
    for content, expected in (
        ("max 100000\n", None),
        ("150000 100000\n", 2),
        ("50000 100000\n", 1),
        ("garbage\n", None),
        ("", None),
    ):
        cpu_max.write_text(content)
        assert cgroup_cpu_limit(cpu_max) == expected, content
    assert cgroup_cpu_limit(tmp_path / "missing") is None
    assert Settings(environment="development", api_workers="4").api_workers == 4
    for bad in ("0", "-2", "65", "many"):
        with pytest.raises(ValidationError):
            Settings(environment="development", api_workers=bad)
