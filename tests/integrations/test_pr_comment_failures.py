"""A pull request's comment through a forge that fails (500, then 403 with rate-limit headers) on
real Postgres, Temporal, git and the sandbox runner: the run succeeds regardless and the comment
arrives later; hostile coverage reports (billion laughs, 50 MB, garbage) published by the run
give a note on the pull request, never a crash or a figure. GitLab merge requests get their
note the same way, and a passed security_scan stage counts in the quality score."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from temporalio.client import Client

from db.models.integrations import PullRequest
from db.models.pipelines import PipelineStage
from db.session import session_scope
from forgeline.settings import Settings
from tests.integrations.fake_forge import Failure, FakeForge
from tests.integrations.support import (
    connect_repo,
    deliver,
    github_pull,
    run_workers,
    runs_of,
    topic_repo,
)
from tests.integrations.test_pr_previews import comment_says
from tests.runs.helpers import wait_for

TOKEN = "ghp_" + "F" * 36
BOMB = (
    '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    '<coverage line-rate="1">&c;</coverage>'
)
HOSTILE_BUILD = (
    f"printf '%s' '{BOMB}' > coverage.xml"
    " && head -c 52428800 /dev/zero > lcov.info"
    " && head -c 4096 /dev/urandom > jacoco.xml"
)


def pull(action: str, number: int, head: str, base: str) -> bytes:
    return github_pull(action, number, "topic", head, "main", base)


async def pr_row(session_maker: Any, project_id: uuid.UUID) -> PullRequest:
    async with session_maker() as session:
        row: PullRequest | None = await session.scalar(
            select(PullRequest).where(PullRequest.project_id == project_id)
        )
    assert row is not None
    return row


async def test_forge_failures_delay_the_comment_never_the_run(
    api_client,
    temporal_client: Client,
    forge: FakeForge,
    forge_settings: Settings,
    session_maker,
    tmp_path: Path,
    task_queue: str,
) -> None:
    repo, base, head = topic_repo(tmp_path, {"src/feature.py": "x = 1\n"})
    connected = await connect_repo(
        session_maker,
        forge_settings,
        repo,
        pipelines=[{"on_pull_request": {}}],
        token=TOKEN,
        stages=[{"name": "test", "run": HOSTILE_BUILD}],
    )
    async with session_scope(session_maker) as session:
        await session.execute(
            update(PipelineStage)
            .where(PipelineStage.pipeline_id == connected.pipeline_ids[0])
            .values(artifact_paths=["coverage.xml", "lcov.info", "jacoco.xml"])
        )
    forge.fail_comments(
        Failure(500),
        Failure(403, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0"}),
        Failure(403, headers={"Retry-After": "2"}),
        Failure(429, headers={"Retry-After": "1"}),
    )
    async with run_workers(temporal_client, forge_settings, session_maker, task_queue, tmp_path):
        outcome = await deliver(
            api_client, temporal_client, connected, pull("opened", 4, head, base), "pull_request"
        )
        assert len(outcome.run_ids) == 1

        async def run_finished() -> bool:
            [run] = await runs_of(session_maker, connected.pipeline_ids)
            return run.status in ("success", "failed", "cancelled")

        await wait_for(run_finished, timeout=90)
        [run] = await runs_of(session_maker, connected.pipeline_ids)
        assert run.status == "success"
        await comment_says(forge, 4, "success", "coverage note", timeout=120)
    refused = [r.answered for r in forge.received if "/comments" in r.path and r.answered >= 400]
    assert refused == [500, 403, 403, 429]
    body = forge.comments_on("acme/widgets#4")[0].body
    assert "has a DTD" in body and "larger than 20 MiB" in body and "not well" in body
    assert "no coverage report" in body
    row = await pr_row(session_maker, connected.project_id)
    assert row.test_coverage_percentage is None and row.coverage_note
    assert row.ci_status == "success" and str(row.quality_score) == "100.00"


async def test_gitlab_merge_request_gets_one_note(
    api_client,
    temporal_client: Client,
    forge: FakeForge,
    forge_settings: Settings,
    session_maker,
    tmp_path: Path,
    task_queue: str,
) -> None:
    repo, _, head = topic_repo(tmp_path, {"src/feature.py": "x = 2\n"})
    connected = await connect_repo(
        session_maker,
        forge_settings,
        repo,
        provider="gitlab",
        pipelines=[{"on_pull_request": {}}],
        token="glpat-" + "G" * 20,
        stages=[{"name": "test", "run": "true"}, {"name": "scan", "run": "true"}],
    )
    async with session_scope(session_maker) as session:
        await session.execute(
            update(PipelineStage)
            .where(PipelineStage.pipeline_id == connected.pipeline_ids[0])
            .where(PipelineStage.name == "scan")
            .values(stage_type="security_scan")
        )
    event = {
        "object_kind": "merge_request",
        "project": {"id": 1, "path_with_namespace": "group/widgets"},
        "user": {"username": "dev"},
        "object_attributes": {
            "iid": 8,
            "action": "open",
            "source_branch": "topic",
            "target_branch": "main",
            "source_project_id": 1,
            "target_project_id": 1,
            "last_commit": {"id": head},
            "title": "Feature",
        },
    }
    async with run_workers(temporal_client, forge_settings, session_maker, task_queue, tmp_path):
        r = await api_client.post(
            f"/v1/webhooks/gitlab?repository={connected.repository_id}",
            content=json.dumps(event).encode(),
            headers={
                "Content-Type": "application/json",
                "X-Gitlab-Event": "Merge Request Hook",
                "X-Gitlab-Token": connected.secret,
                "X-Gitlab-Event-UUID": str(uuid.uuid4()),
            },
        )
        assert r.status_code == 202, r.text

        async def noted() -> bool:
            notes = forge.comments_on("group%2Fwidgets!8")
            return len(notes) == 1 and "success" in notes[0].body

        await wait_for(noted, timeout=90)
    [note_request] = [r for r in forge.received if r.method == "POST" and "/notes" in r.path]
    assert note_request.headers.get("private-token", "").startswith("glpat-")
    # The passed security_scan stage counts in the score: 100 * (50 + 20) / 70.
    row = await pr_row(session_maker, connected.project_id)
    assert (row.security_scan_status, str(row.quality_score)) == ("success", "100.00")
