"""A delivery signed for one repository and sent to another's webhook URL (another tenant's, or a
guessed ID) is refused before anything is written, on GitHub and GitLab alike, and so is one
whose URL names no repository while its payload names a repository connected elsewhere with
another secret. The rightful repository's own delivery still goes through afterwards. Real API
and Postgres."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from forgeline.settings import Settings
from tests.factories import make_org
from tests.integrations.support import Connected, deliveries_of, github_headers, github_push
from tests.integrations.support import connect_project as _connect
from tests.integrations.webhook_support import SHA1, SHA2, post_github, resolve_forges_publicly


@pytest.fixture(autouse=True)
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve_forges_publicly(monkeypatch)


async def two_tenants(
    session_maker: Any, settings: Settings, tmp_path: Path
) -> tuple[Connected, Connected]:
    connected = []
    for name in ("ours", "theirs"):
        org = await make_org(session_maker)
        connected.append(
            await _connect(
                session_maker,
                settings,
                org.org_id,
                url=str(tmp_path / name),
                pipelines=[{"on_push": {"branches": ["main"]}}],
            )
        )
    return connected[0], connected[1]


def rejected(app: Any) -> int:
    counter = getattr(app.state, "rejected_deliveries", None)
    return 0 if counter is None else counter.total()


async def test_a_delivery_signed_for_another_repository_is_refused(
    api_client: Any, app: Any, session_maker: Any, settings: Settings, tmp_path: Path
) -> None:
    ours, theirs = await two_tenants(session_maker, settings, tmp_path)
    body = github_push("refs/heads/main", SHA2, SHA1)
    signed_for_ours = github_headers(ours.secret, body)
    before = rejected(app)
    # Our secret, their URL; their URL twenty times at once (a replay against the wrong URL).
    answers = await asyncio.gather(
        *(post_github(api_client, theirs.repository_id, body, signed_for_ours) for _ in range(20))
    )
    assert {r.status_code for r in answers} == {401}
    # A guessed repository ID.
    r = await post_github(api_client, uuid.uuid4(), body, signed_for_ours)
    assert r.status_code == 404
    assert rejected(app) == before + 21
    assert await deliveries_of(session_maker, theirs.project_id) == []
    assert await deliveries_of(session_maker, ours.project_id) == []
    # GitLab: our token at their URL.
    gitlab = json.dumps(
        {
            "object_kind": "push",
            "ref": "refs/heads/main",
            "before": SHA1,
            "after": SHA2,
            "project": {"path_with_namespace": "acme/widgets", "git_http_url": "https://gl/x.git"},
        }
    ).encode()
    r = await api_client.post(
        f"/v1/webhooks/gitlab?repository={theirs.repository_id}",
        content=gitlab,
        headers={
            "X-Gitlab-Event": "Push Hook",
            "Content-Type": "application/json",
            "X-Gitlab-Token": ours.secret,
        },
    )
    assert r.status_code == 401
    assert await deliveries_of(session_maker, theirs.project_id) == []
    # The same delivery at our own URL is ours: accepted once.
    r = await post_github(api_client, ours.repository_id, body, signed_for_ours)
    assert r.status_code == 202, r.text
    assert len(await deliveries_of(session_maker, ours.project_id)) == 1
    assert await deliveries_of(session_maker, theirs.project_id) == []


async def test_a_payload_naming_another_tenants_repository_is_refused(
    api_client: Any, session_maker: Any, settings: Settings, tmp_path: Path
) -> None:
    """No repository in the URL: the payload's clone URL finds their repository, whose secret
    our signature does not match."""
    org = await make_org(session_maker)
    clone_url = f"https://github.com/acme/theirs-{uuid.uuid4().hex[:6]}.git"
    theirs = await _connect(
        session_maker,
        settings,
        org.org_id,
        url=clone_url,
        provider="github",
        pipelines=[{"on_push": {}}],
    )
    ours, _ = await two_tenants(session_maker, settings, tmp_path)
    body = github_push("refs/heads/main", SHA2, SHA1, clone_url=clone_url)
    r = await post_github(api_client, None, body, github_headers(ours.secret, body))
    assert r.status_code == 401, r.text
    assert await deliveries_of(session_maker, theirs.project_id) == []
