"""The hot project and environment reads run on one bare autocommit connection (api.deps
ReadConnectionDep), not a session: API keys and session tokens both authenticate on it, the key's
request is still counted, another tenant's IDs are 404, and concurrent reads give every
connection back."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import Session

from tests.api.tenancy_factories import FactoryContext
from tests.factories import OrgFixture, make_org


async def make_project(session_maker: Any, org: OrgFixture) -> tuple[str, str]:
    ctx = FactoryContext(session_maker, org)
    return str(await ctx.ensure("project_id")), str(await ctx.ensure("environment_id"))


def hot_paths(project_id: str, environment_id: str) -> list[str]:
    return [
        "/v1/projects",
        f"/v1/projects/{project_id}",
        f"/v1/projects/{project_id}/environments",
        f"/v1/environments/{environment_id}",
    ]


async def test_hot_reads_open_no_session_and_count_the_key(app: Any, api_client, session_maker):
    org = await make_org(session_maker)
    paths = hot_paths(*await make_project(session_maker, org))
    sessions_begun: list[object] = []

    def begun(session: Session, *_: Any) -> None:
        sessions_begun.append(session)

    async def window_hits() -> int:
        async with session_maker() as session:
            found = await session.execute(
                text(
                    "SELECT COALESCE(SUM(w.hits), 0) FROM api_key_rate_windows w"
                    " JOIN api_keys k ON k.id = w.api_key_id WHERE k.organization_id = :org"
                ),
                {"org": org.org_id},
            )
            return int(found.scalar_one())

    before = await window_hits()
    event.listen(Session, "after_begin", begun)
    try:
        answers = [await api_client.get(path, headers=org.headers) for path in paths]
    finally:
        event.remove(Session, "after_begin", begun)
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert sessions_begun == []
    assert await window_hits() >= before + len(paths)


async def test_session_tokens_authenticate_on_the_bare_connection(api_client, session_maker):
    org = await make_org(session_maker)
    project_id, environment_id = await make_project(session_maker, org)
    login = await api_client.post(
        "/v1/auth/login", json={"email": org.email, "password": org.password}
    )
    assert login.status_code == 200, login.text
    token = {"Authorization": f"Bearer {login.json()['token']}"}
    for path in hot_paths(project_id, environment_id):
        assert (await api_client.get(path, headers=token)).status_code == 200, path
    revoked = {"Authorization": "Bearer " + login.json()["token"][:-2] + "xx"}
    assert (await api_client.get("/v1/projects", headers=revoked)).status_code == 401


async def test_other_tenants_and_hostile_ids_are_404_or_422(api_client, session_maker):
    owner, stranger = await make_org(session_maker), await make_org(session_maker)
    paths = hot_paths(*await make_project(session_maker, owner))
    for path in paths[1:]:
        assert (await api_client.get(path, headers=stranger.headers)).status_code == 404, path
    mine = await api_client.get("/v1/projects", headers=stranger.headers)
    assert mine.status_code == 200 and mine.json()["items"] == []
    for hostile in ("not-a-uuid", "1%27%20OR%201=1", "0" * 200):
        assert (
            await api_client.get(f"/v1/projects/{hostile}", headers=owner.headers)
        ).status_code == 422
    unknown = await api_client.get("/v1/projects", headers={"Authorization": "Bearer fl_live_x"})
    assert unknown.status_code == 401


async def test_concurrent_hot_reads_give_every_connection_back(app: Any, api_client, session_maker):
    org = await make_org(session_maker)
    paths = hot_paths(*await make_project(session_maker, org))
    answers = await asyncio.gather(
        *(api_client.get(paths[i % len(paths)], headers=org.headers) for i in range(40))
    )
    assert {a.status_code for a in answers} == {200}
    # The throttled last_used_at refresh writes in the background on its own connection: once
    # it is done, nothing the requests took may still be out.
    await app.state.last_used.drain()
    assert app.state.engine.pool.checkedout() == 0
