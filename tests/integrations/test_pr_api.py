"""The pull request API on real Postgres and Temporal: a tracked pull request is listed and read
by its number within its organization; another tenant gets 404 for the list and the row alike,
and bad numbers or filters are a 422."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.client import Client

from forgeline.settings import Settings
from tests.factories import make_org
from tests.integrations.support import (
    connect_project,
    deliver,
    github_pull,
    integrations_worker,
    make_git_repo,
)


async def test_pull_requests_are_tenant_scoped(
    api_client, temporal_client: Client, settings: Settings, session_maker, tmp_path: Path
) -> None:
    repo, sha = make_git_repo(tmp_path)
    org = await make_org(session_maker)
    connected = await connect_project(
        session_maker, settings, org.org_id, url=str(repo), pipelines=[{}]
    )
    payload = json.loads(github_pull("opened", 12, "topic", sha, "main", sha))
    payload["pull_request"]["title"] = "Tenant-scoped"
    async with integrations_worker(
        temporal_client, settings, session_maker, run_task_queue="unused"
    ):
        await deliver(
            api_client, temporal_client, connected, json.dumps(payload).encode(), "pull_request"
        )
    base = f"/v1/projects/{connected.project_id}/pull-requests"

    listed = await api_client.get(base, headers=org.headers)
    assert listed.status_code == 200, listed.text
    [row] = listed.json()
    assert (row["number"], row["title"], row["status"]) == (12, "Tenant-scoped", "open")
    assert (row["ci_status"], row["pipelines"], row["quality_score"]) == ("pending", {}, None)
    one = await api_client.get(f"{base}/12", headers=org.headers)
    assert one.status_code == 200 and one.json()["id"] == row["id"]
    assert (await api_client.get(f"{base}?status=merged", headers=org.headers)).json() == []

    stranger = await make_org(session_maker)
    for url in (base, f"{base}/12", f"{base}?status=open"):
        refused = await api_client.get(url, headers=stranger.headers)
        assert refused.status_code == 404, (url, refused.text)
        assert "Tenant-scoped" not in refused.text
    assert (await api_client.get(f"{base}/13", headers=org.headers)).status_code == 404
    for bad in (f"{base}/0", f"{base}/99999999999", f"{base}?status=nope", f"{base}?limit=0"):
        assert (await api_client.get(bad, headers=org.headers)).status_code == 422, bad
    assert (await api_client.get(base)).status_code == 401
