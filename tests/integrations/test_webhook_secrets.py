"""Which repository a webhook delivery is for and the secret it is verified with, over HTTP on
real Postgres: found by the payload's URL (each project connected to the same public repository
checks its own secret), the secret generated on connect and shown once, stored encrypted, kept
out of the audit log, rotated (every earlier secret refused), and a 404 to another
organization."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select

from db.models.integrations import WebhookPayload
from db.models.operations import AuditLog
from db.models.projects import Repository
from forgeline.crypto import decrypt_str
from tests.factories import make_org
from tests.integrations.support import connect_project as _connect
from tests.integrations.support import deliveries_of, github_headers, github_push
from tests.integrations.webhook_support import SHA1, SHA2, post_github, resolve_forges_publicly


@pytest.fixture(autouse=True)
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve_forges_publicly(monkeypatch)


async def test_repository_found_by_payload_url(api_client, settings, session_maker) -> None:
    org = await make_org(session_maker)
    clone_url = f"https://github.com/acme/widgets-{uuid.uuid4().hex[:6]}.git"
    hooked = await _connect(
        session_maker,
        settings,
        org.org_id,
        url=clone_url.removesuffix(".git"),
        provider="github",
        pipelines=[{"on_push": {}}],
    )
    # Another project with the same public repository has its own secret.
    other = await _connect(
        session_maker,
        settings,
        org.org_id,
        url=clone_url,
        provider="github",
        pipelines=[{"on_push": {}}],
    )
    body = github_push("refs/heads/main", SHA2, SHA1, clone_url=clone_url)
    for target in (hooked, other):
        r = await post_github(api_client, None, body, github_headers(target.secret, body))
        assert r.status_code == 202, r.text
        rows = await deliveries_of(session_maker, target.project_id)
        assert len(rows) == 1


async def test_webhook_secret_rotation(api_client, app, settings, session_maker) -> None:
    org = await make_org(session_maker)
    r = await api_client.post(
        "/v1/projects", json={"name": "Hooked", "project_type": "api"}, headers=org.headers
    )
    project_id = r.json()["id"]
    url = f"/v1/projects/{project_id}/repository/webhook-secret"
    assert (await api_client.post(url, headers=org.headers)).status_code == 404  # no repository
    r = await api_client.put(
        f"/v1/projects/{project_id}/repository",
        json={"provider": "github", "url": "https://github.com/acme/rotate.git"},
        headers=org.headers,
    )
    assert r.status_code == 201, r.text
    # Connecting made a secret, shown this once.
    on_connect = r.json()["webhook"]
    assert on_connect["urls"]["gitlab"].endswith(f"?repository={r.json()['id']}")
    assert len(on_connect["secret"]) >= 40
    again = await api_client.put(
        f"/v1/projects/{project_id}/repository",
        json={"provider": "github", "url": "https://github.com/acme/rotate.git"},
        headers=org.headers,
    )
    assert again.status_code == 200 and again.json()["webhook"] is None
    first = await api_client.post(url, headers=org.headers)
    assert first.status_code == 201, first.text
    data = first.json()
    assert data["urls"]["github"].endswith(
        f"/v1/webhooks/github?repository={data['repository_id']}"
    )
    assert len(data["secret"]) >= 40
    async with session_maker() as session:
        repo = await session.scalar(
            select(Repository).where(Repository.project_id == uuid.UUID(project_id))
        )
        assert repo is not None and repo.webhook_secret_encrypted is not None
        assert data["secret"] not in repo.webhook_secret_encrypted
        assert decrypt_str(repo.webhook_secret_encrypted, settings) == data["secret"]
        audit = await session.scalars(select(AuditLog).where(AuditLog.resource_id == repo.id))
        assert all(data["secret"] not in json.dumps(a.metadata_ or {}) for a in audit)
    # The secret is not readable afterwards.
    shown = await api_client.get(f"/v1/projects/{project_id}/repository", headers=org.headers)
    assert data["secret"] not in shown.text
    assert on_connect["secret"] not in shown.text
    second = (await api_client.post(url, headers=org.headers)).json()
    assert second["secret"] != data["secret"]
    body = github_push("refs/heads/main", SHA2, SHA1)
    repo_id = uuid.UUID(data["repository_id"])
    for previous in (on_connect["secret"], data["secret"]):
        old = await post_github(api_client, repo_id, body, github_headers(previous, body))
        assert old.status_code == 401
    new = await post_github(api_client, repo_id, body, github_headers(second["secret"], body))
    assert new.status_code == 202
    # Another organization's project is a 404.
    stranger = await make_org(session_maker)
    assert (await api_client.post(url, headers=stranger.headers)).status_code == 404
    assert (await api_client.post(url)).status_code == 401
    async with session_maker() as session:
        rows = await session.scalars(
            select(WebhookPayload).where(WebhookPayload.project_id == uuid.UUID(project_id))
        )
        assert len(list(rows)) == 1
