"""A webhook body is parsed (for the repository's URL) before its signature can be checked: a
deeply nested body from anyone is a 400, never a 500 or a worker's recursion limit, and nothing
is recorded. Real API on real Postgres."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from forgeline.settings import Settings
from tests.factories import make_org
from tests.integrations.support import connect_project, deliveries_of, github_headers

NESTED = (
    b'{"repository": {"clone_url": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    b"[" * 400_000 + b"]" * 400_000,
    b'{"ref": "refs/heads/main", "deep": ' + b'{"a": ' * 70 + b"1" + b"}" * 70 + b"}",
)


@pytest.fixture
async def connected(session_maker: Any, settings: Settings, tmp_path: Path) -> Any:
    org = await make_org(session_maker)
    return await connect_project(
        session_maker,
        settings,
        org.org_id,
        url=str(tmp_path / "not-cloned"),
        pipelines=[{"on_push": {"branches": ["main"]}}],
    )


async def test_deeply_nested_bodies_are_refused_signed_or_not(
    api_client, session_maker, connected
) -> None:
    for body in NESTED:
        # Unsigned, found by the payload's URL: parsed before any secret is known.
        r = await api_client.post(
            "/v1/webhooks/github", content=body, headers={"X-GitHub-Event": "push"}
        )
        assert r.status_code == 400, (body[:40], r.status_code, r.text[:200])
        assert "not JSON" in r.text
        # Signed for the repository named in the query: parsed after the check.
        r = await api_client.post(
            f"/v1/webhooks/github?repository={connected.repository_id}",
            content=body,
            headers=github_headers(connected.secret, body),
        )
        assert r.status_code == 400, (body[:40], r.status_code, r.text[:200])
    assert await deliveries_of(session_maker, connected.project_id) == []
