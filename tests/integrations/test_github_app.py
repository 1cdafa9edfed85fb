"""Connecting through the GitHub App on a fake GitHub (real HTTP server) and real Postgres:
claiming an installation (the App mints a token to list its repositories), connecting a
project's repository it covers, installation webhooks keeping the list current; another
tenant's connection is a 404, another organization's installation a 409, a forged or replayed
delivery changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.projects import GitProviderConnection, Project, Repository
from db.session import session_scope
from forgeline.crypto import encrypt_str
from forgeline.settings import Settings
from tests.factories import make_org
from tests.integrations.app_support import app_delivery
from tests.integrations.fake_github_app import FakeGitHubApp


async def new_project(
    session_maker: async_sessionmaker[AsyncSession], org_id: uuid.UUID
) -> uuid.UUID:
    suffix = uuid.uuid4().hex[:8]
    async with session_scope(session_maker) as session:
        project = Project(
            id=uuid.uuid4(),
            organization_id=org_id,
            name=f"App {suffix}",
            slug=f"app-{suffix}",
            project_type="api",
        )
        session.add(project)
    return project.id


async def connection_row(
    session_maker: async_sessionmaker[AsyncSession], installation: int
) -> GitProviderConnection:
    async with session_maker() as session:
        row = await session.scalar(
            select(GitProviderConnection).where(
                GitProviderConnection.installation_id == installation
            )
        )
    assert row is not None
    return row


async def link_github(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    app: FakeGitHubApp,
    user_id: uuid.UUID,
    installations: list[int],
) -> str:
    """The user signed in with a GitHub account that administers `installations`; its token."""
    token = "gho_" + uuid.uuid4().hex
    app.user_installations[token] = installations
    async with session_scope(session_maker) as session:
        session.add(
            GitProviderConnection(
                id=uuid.uuid4(),
                user_id=user_id,
                provider="github",
                external_account_id=str(uuid.uuid4().int % 10**12),
                access_token_encrypted=encrypt_str(token, settings),
            )
        )
    return token


async def signed_in(api_client: Any, org: Any) -> dict[str, str]:
    """A session of the organization's user: an installation is claimed by a person."""
    r = await api_client.post("/v1/auth/login", json={"email": org.email, "password": org.password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def test_claim_and_connect_through_installation(
    api_client, app_api, app_forge, app_settings, installation, session_maker
) -> None:
    app, _ = app_forge
    app.installations[installation] = ["acme/widgets", "acme/gadgets"]
    org = await make_org(session_maker)
    other = await make_org(session_maker)
    stranger = await make_org(session_maker)
    org_user, other_user, stranger_user = [
        await signed_in(api_client, o) for o in (org, other, stranger)
    ]
    org_token = await link_github(session_maker, app_settings, app, org.user_id, [installation])
    # Knowing the number is not enough: a user without GitHub linked, or whose GitHub account
    # does not administer the installation, cannot claim it.
    r = await api_client.post(
        "/v1/github-app/installations",
        json={"installation_id": installation},
        headers=stranger_user,
    )
    assert r.status_code == 403, r.text
    await link_github(session_maker, app_settings, app, stranger.user_id, [])
    r = await api_client.post(
        "/v1/github-app/installations",
        json={"installation_id": installation},
        headers=stranger_user,
    )
    assert r.status_code == 404, r.text
    await link_github(session_maker, app_settings, app, other.user_id, [installation])
    # Concurrent claims of one installation by its organization: one connection.
    answers = await asyncio.gather(
        *(
            api_client.post(
                "/v1/github-app/installations",
                json={"installation_id": installation},
                headers=org_user,
            )
            for _ in range(5)
        )
    )
    assert {r.status_code for r in answers} == {201}, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    claimed = answers[0].json()
    assert claimed["repositories"] == ["acme/widgets", "acme/gadgets"]
    assert app.mints(installation) == 5  # one token per use
    # Another organization cannot take it, even through a user who administers it.
    taken = await api_client.post(
        "/v1/github-app/installations",
        json={"installation_id": installation},
        headers=other_user,
    )
    assert taken.status_code == 409, taken.text
    app.user_installations[org_token].append(1)
    missing = await api_client.post(
        "/v1/github-app/installations", json={"installation_id": 1}, headers=org_user
    )
    assert missing.status_code == 404, missing.text  # the App has no installation 1
    # The connection keeps no token.
    row = await connection_row(session_maker, installation)
    assert row.access_token_encrypted is None and row.organization_id == org.org_id

    project_id = await new_project(session_maker, org.org_id)
    other_project = await new_project(session_maker, other.org_id)
    connect = f"/v1/projects/{project_id}/repository/github-app"
    body = {"connection_id": claimed["id"], "repository": "acme/widgets"}
    # Another tenant's connection ID (and project) is a 404 and writes nothing.
    r = await api_client.post(
        f"/v1/projects/{other_project}/repository/github-app", json=body, headers=other.headers
    )
    assert r.status_code == 404, r.text
    r = await api_client.get(f"/v1/github-app/installations/{claimed['id']}", headers=other.headers)
    assert r.status_code == 404
    r = await api_client.post(connect, json=body, headers=other.headers)
    assert r.status_code == 404
    uncovered = {**body, "repository": "acme/secret"}
    assert (await api_client.post(connect, json=uncovered, headers=org.headers)).status_code == 422
    hostile = {**body, "repository": "acme/widgets;rm -rf /"}
    assert (await api_client.post(connect, json=hostile, headers=org.headers)).status_code == 422
    r = await api_client.post(connect, json=body, headers=org.headers)
    assert r.status_code == 200, r.text
    assert r.json()["url"] == "https://github.com/acme/widgets.git"
    async with session_maker() as session:
        repo = await session.scalar(select(Repository).where(Repository.project_id == project_id))
        assert (
            await session.scalar(select(Repository).where(Repository.project_id == other_project))
        ) is None
    assert repo is not None and str(repo.connection_id) == claimed["id"]
    assert repo.access_token_encrypted is None


async def test_installation_webhooks(
    api_client, app_api, app_forge, app_settings, installation, session_maker
) -> None:
    org = await make_org(session_maker)
    await link_github(session_maker, app_settings, app_forge[0], org.user_id, [installation])
    r = await api_client.post(
        "/v1/github-app/installations",
        json={"installation_id": installation},
        headers=await signed_in(api_client, org),
    )
    assert r.status_code == 201, r.text
    added = {
        "action": "added",
        "installation": {"id": installation},
        "repositories_added": [{"full_name": "acme/gadgets"}, {"full_name": "acme/tools"}],
        "repositories_removed": [{"full_name": "acme/widgets"}],
    }
    body, headers = app_delivery("installation_repositories", added)
    # A forged signature and a body changed after signing are refused and change nothing.
    forged_body, forged = app_delivery("installation_repositories", added, secret="not-it")
    r = await api_client.post("/v1/webhooks/github-app", content=forged_body, headers=forged)
    assert r.status_code == 401
    r = await api_client.post(
        "/v1/webhooks/github-app", content=body.replace(b"tools", b"tooLs"), headers=headers
    )
    assert r.status_code == 401
    assert (await connection_row(session_maker, installation)).installation_repositories == [
        "acme/widgets"
    ]
    # Twenty concurrent redeliveries apply once.
    answers = await asyncio.gather(
        *(
            api_client.post("/v1/webhooks/github-app", content=body, headers=headers)
            for _ in range(20)
        )
    )
    assert sorted(r.json()["status"] for r in answers) == ["accepted"] + ["duplicate"] * 19
    row = await connection_row(session_maker, installation)
    assert row.installation_repositories == ["acme/gadgets", "acme/tools"]
    # Uninstalling the App revokes the connection; its repositories stop reporting through it.
    body, headers = app_delivery(
        "installation", {"action": "deleted", "installation": {"id": installation}}
    )
    assert (
        await api_client.post("/v1/webhooks/github-app", content=body, headers=headers)
    ).status_code == 202
    assert (await connection_row(session_maker, installation)).revoked_at is not None
    # Hostile payloads: no installation, an unsupported event, a ping.
    body, headers = app_delivery("installation", {"action": "deleted", "installation": "x"})
    r = await api_client.post("/v1/webhooks/github-app", content=body, headers=headers)
    assert r.status_code == 400, r.text
    body, headers = app_delivery("gollum", {"installation": {"id": installation}})
    assert (
        await api_client.post("/v1/webhooks/github-app", content=body, headers=headers)
    ).status_code == 400
    body, headers = app_delivery("ping", {"zen": "hi"})
    assert (
        await api_client.post("/v1/webhooks/github-app", content=body, headers=headers)
    ).status_code == 200
