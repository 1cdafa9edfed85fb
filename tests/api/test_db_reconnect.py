"""The API across PostgreSQL restarts: its pool holds dead connections (no pre-ping), yet a read
answers 200 (retried once on a fresh connection) and a write 2xx or a clean 503 with Retry-After;
while the server is down every request is a 503, never a 500. Runs its own embedded PostgreSQL so
stopping it hits no other test."""

from __future__ import annotations

import asyncio

import httpx

from forgeline.embedded.postgres import EmbeddedPostgres

# The fixtures of this module (imported to be found; used by name as test parameters).
from tests.api.own_postgres import client, org  # noqa: F401
from tests.factories import OrgFixture


async def restart(server: EmbeddedPostgres) -> None:
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)


def project(name: str) -> dict[str, str]:
    return {"name": name, "project_type": "api"}


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["type"].endswith("/service-unavailable")


async def test_reads_and_writes_survive_a_postgres_restart(
    own_postgres: EmbeddedPostgres,
    org: OrgFixture,  # noqa: F811
    client: httpx.AsyncClient,  # noqa: F811
) -> None:
    created = await client.post("/v1/projects", json=project("Before"), headers=org.headers)
    assert created.status_code == 201, created.text
    before = await client.get("/v1/projects", headers=org.headers)
    assert before.status_code == 200, before.text

    # The pooled connections die with the server; the next read is retried on a new one.
    await restart(own_postgres)
    after = await client.get("/v1/projects", headers=org.headers)
    assert after.status_code == 200, after.text
    assert after.json()["items"] == before.json()["items"]
    one = await client.get(f"/v1/projects/{created.json()['id']}", headers=org.headers)
    assert one.status_code == 200, one.text

    # A write that meets a dead connection is not retried: 201, or 503 the client may retry.
    await restart(own_postgres)
    write = await client.post("/v1/projects", json=project("After"), headers=org.headers)
    assert write.status_code in (201, 503), write.text
    if write.status_code == 503:
        assert_unavailable(write)
        write = await client.post("/v1/projects", json=project("After"), headers=org.headers)
        assert write.status_code == 201, write.text
    names = [
        p["name"] for p in (await client.get("/v1/projects", headers=org.headers)).json()["items"]
    ]
    assert sorted(names) == ["After", "Before"]


async def test_a_stopped_postgres_is_503_until_it_is_back(
    own_postgres: EmbeddedPostgres,
    org: OrgFixture,  # noqa: F811
    client: httpx.AsyncClient,  # noqa: F811
) -> None:
    assert (await client.get("/v1/projects", headers=org.headers)).status_code == 200

    await asyncio.to_thread(own_postgres.stop)
    assert_unavailable(await client.get("/v1/projects", headers=org.headers))
    assert_unavailable(await client.get("/v1/projects", headers=org.headers))
    assert_unavailable(await client.post("/v1/projects", json=project("Down"), headers=org.headers))

    await asyncio.to_thread(own_postgres.start)
    assert (await client.get("/v1/projects", headers=org.headers)).status_code == 200
    created = await client.post("/v1/projects", json=project("Up"), headers=org.headers)
    assert created.status_code == 201, created.text
