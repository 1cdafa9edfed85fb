"""One repository per project: URL safety, branch rules, the token encrypted and never shown."""

from __future__ import annotations

import logging
import subprocess
import uuid
from collections.abc import Sequence

import pytest
from sqlalchemy import func, select

from db.models.operations import AuditLog
from db.models.projects import Repository
from forgeline import url_safety
from forgeline.crypto import decrypt_str
from forgeline.local_paths import organization_roots
from tests.factories import make_org

TOKEN = "ghp_" + "Z" * 36


@pytest.fixture(autouse=True)
def public_dns(monkeypatch):
    """The sandbox has no DNS: names resolve to a public address unless they say otherwise."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        if host.endswith(".internal.example"):
            return ["10.0.0.5"]
        if host == "metadata.example":
            return ["169.254.169.254"]
        return ["140.82.112.3"]

    monkeypatch.setattr(url_safety, "system_resolver", resolve)


@pytest.fixture
async def project(api_client, session_maker):
    org = await make_org(session_maker)
    r = await api_client.post(
        "/v1/projects", json={"name": "Repo test", "project_type": "spa"}, headers=org.headers
    )
    assert r.status_code == 201
    return org, r.json()


async def repo_rows(session_maker, project_id) -> list[Repository]:
    async with session_maker() as session:
        stmt = select(Repository).where(Repository.project_id == uuid.UUID(project_id))
        return list((await session.execute(stmt)).scalars())


async def test_connect_update_disconnect(api_client, app, session_maker, project, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    org, proj = project
    url = f"/v1/projects/{proj['id']}/repository"
    body = {
        "provider": "github",
        "url": "https://github.com/forgeline/demo.git",
        "default_branch": "release/v1.2",
        "access_token": TOKEN,
    }
    r = await api_client.put(url, json=body, headers=org.headers)
    assert r.status_code == 201, r.text
    assert r.json()["has_access_token"] is True and TOKEN not in r.text
    assert "access_token" not in r.json()
    (row,) = await repo_rows(session_maker, proj["id"])
    assert row.access_token_encrypted and TOKEN not in row.access_token_encrypted
    assert decrypt_str(row.access_token_encrypted, app.state.settings) == TOKEN

    got = await api_client.get(url, headers=org.headers)
    assert got.status_code == 200 and TOKEN not in got.text
    assert got.json()["default_branch"] == "release/v1.2"

    # PUT without a token keeps it; an explicit null removes it. Still one row per project.
    r = await api_client.put(
        url, json={**body, "access_token": None, "default_branch": "main"}, headers=org.headers
    )
    assert r.status_code == 200 and r.json()["has_access_token"] is False
    r = await api_client.put(url, json={**body, "access_token": TOKEN}, headers=org.headers)
    r = await api_client.put(
        url, json={k: v for k, v in body.items() if k != "access_token"}, headers=org.headers
    )
    assert r.status_code == 200 and r.json()["has_access_token"] is True
    assert len(await repo_rows(session_maker, proj["id"])) == 1

    assert (await api_client.delete(url, headers=org.headers)).status_code == 204
    assert (await api_client.get(url, headers=org.headers)).status_code == 404
    assert (await api_client.delete(url, headers=org.headers)).status_code == 404

    async with session_maker() as session:
        audit = (
            (
                await session.execute(
                    select(AuditLog)
                    .where(AuditLog.organization_id == org.org_id)
                    .order_by(AuditLog.created_at)
                )
            )
            .scalars()
            .all()
        )
    actions = [a.action for a in audit if a.resource_type == "repository"]
    assert actions[0] == "repository.connected" and actions[-1] == "repository.disconnected"
    assert all(TOKEN not in str(a.old_values) + str(a.new_values) for a in audit)
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pw@github.com/a/b.git",
        "http://github.com/a/b.git",
        "git://github.com/a/b.git",
        "ext::sh -c touch% /tmp/x",
        "file:///etc",
        "--upload-pack=id",
        "https://127.0.0.1/a/b.git",
        "https://[::ffff:169.254.169.254]/a/b.git",
        "https://git.internal.example/a/b.git",
        "https://metadata.example/latest",
        "https://2130706433/a/b.git",
    ],
)
async def test_hostile_urls_are_422_and_write_nothing(
    api_client, session_maker, project, url
) -> None:
    org, proj = project
    r = await api_client.put(
        f"/v1/projects/{proj['id']}/repository",
        json={"provider": "git", "url": url},
        headers=org.headers,
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert await repo_rows(session_maker, proj["id"]) == []
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(AuditLog)
            .where(AuditLog.organization_id == org.org_id, AuditLog.resource_type == "repository")
        )
    assert count == 0


@pytest.mark.parametrize(
    "branch",
    [
        "-delete",
        "a..b",
        "a b",
        "a;rm -rf",
        "feat/",
        "x.lock",
        "@",
        "a@{1}",
        "$(id)",
        "a`b`",
        "HEAD~1",
        "a:b",
        "refs/../x",
        ".hidden",
        "a\\b",
        "",
    ],
)
async def test_bad_branch_names(api_client, project, branch) -> None:
    org, proj = project
    r = await api_client.put(
        f"/v1/projects/{proj['id']}/repository",
        json={"provider": "github", "url": "https://github.com/a/b.git", "default_branch": branch},
        headers=org.headers,
    )
    assert r.status_code == 422, branch


async def test_local_repository_needs_local_provider(api_client, project, settings) -> None:
    org, proj = project
    tmp_path = organization_roots(settings, org.org_id)[0] / uuid.uuid4().hex
    tmp_path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    url = f"/v1/projects/{proj['id']}/repository"
    r = await api_client.put(
        url, json={"provider": "github", "url": str(tmp_path)}, headers=org.headers
    )
    assert r.status_code == 422
    r = await api_client.put(
        url, json={"provider": "local", "url": str(tmp_path)}, headers=org.headers
    )
    assert r.status_code == 201, r.text
    r = await api_client.put(
        url, json={"provider": "local", "url": "https://github.com/a/b.git"}, headers=org.headers
    )
    assert r.status_code == 422


async def test_unknown_fields_and_scopes(api_client, session_maker, project) -> None:
    org, proj = project
    url = f"/v1/projects/{proj['id']}/repository"
    base = {"provider": "github", "url": "https://github.com/a/b.git"}
    r = await api_client.put(
        url, json={**base, "project_id": str(uuid.uuid4())}, headers=org.headers
    )
    assert r.status_code == 422
    r = await api_client.put(url, json={**base, "provider": "svn"}, headers=org.headers)
    assert r.status_code == 422
    reader = await make_org(session_maker, scopes=["projects:read"])
    r = await api_client.put(url, json=base, headers=reader.headers)
    assert r.status_code in (403, 404)
