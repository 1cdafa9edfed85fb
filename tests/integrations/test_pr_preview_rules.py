"""Which environment a pull request's deploy stage releases to, on real Postgres: the pull
request's own preview (one, even for 10 concurrent deploys), with the named environment's release
settings but never its hosts or variables; runs that are not a pull request's keep the named
environment; fork pull requests and closed ones are refused; a reopened pull request gets its
torn-down preview back. A fork's delivery starts nothing and its comment says why."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from temporalio.client import Client, WorkflowExecutionStatus

from core.deployments.pr_previews import preview_for_run, preview_name
from core.integrations import pr_reports
from db.models.deployments import Deployment
from db.models.integrations import PullRequest
from db.models.pipelines import PipelineRun
from db.models.projects import Environment
from db.session import session_scope
from forgeline.errors import Conflict
from forgeline.settings import Settings
from tests.deployments.helpers import make_environment
from tests.factories import make_org
from tests.integrations.fake_forge import running_fake_forge
from tests.integrations.support import (
    connect_project,
    deliver,
    github_pull,
    integrations_worker,
    make_git_repo,
    runs_of,
)
from tests.runs.helpers import create_run, make_pipeline, stage
from workflows.integrations_models import PullRequestRef, pull_request_report_workflow_id
from workflows.preview import preview_workflow_id

NAMED_CONFIG = {
    "health_check_path": "/ready",
    "port": 3000,
    "hostname": "staging.apps.example.test",
    "custom_domain": "www.example.test",
    "environment_variables": [{"name": "API_TOKEN", "value": "s3cret", "secret": True}],
}


async def pull_request_run(
    session_maker: Any, settings: Settings, number: int, **forge: Any
) -> tuple[PipelineRun, Environment]:
    org = await make_org(session_maker)
    project_id, env_id = await make_environment(
        session_maker, org.org_id, provider="static", config=NAMED_CONFIG
    )
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("a", "true")])
    run = await create_run(session_maker, settings, org.org_id, pipeline_id, branch="topic")
    async with session_scope(session_maker) as session:
        row = await session.get(PipelineRun, run.id)
        assert row is not None
        row.project_id = project_id
        row.metadata_ = {"forge": {"event": "pull_request", "pr_number": number, **forge}}
        named = await session.get(Environment, env_id)
        assert named is not None
    return row, named


async def resolve(session_maker: Any, run: PipelineRun, named: Environment) -> Environment:
    async with session_scope(session_maker) as session:
        return await preview_for_run(session, run, named)


async def test_one_preview_per_pull_request_with_safe_settings(
    settings: Settings, session_maker: Any
) -> None:
    run, named = await pull_request_run(session_maker, settings, 5)
    found = await asyncio.gather(*(resolve(session_maker, run, named) for _ in range(10)))
    assert len({env.id for env in found}) == 1
    preview = found[0]
    assert (preview.name, preview.env_type, preview.provider) == (
        preview_name(5),
        "preview",
        "static",
    )
    assert (preview.preview_pr_number, preview.preview_branch, preview.is_protected) == (
        5,
        "topic",
        False,
    )
    assert preview.config["health_check_path"] == "/ready" and preview.config["port"] == 3000
    for kept_out in ("hostname", "custom_domain", "environment_variables"):
        assert kept_out not in preview.config
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count()).where(
                Environment.project_id == run.project_id, Environment.env_type == "preview"
            )
        )
    assert count == 1

    # Torn down, then reopened: the same environment serves again.
    async with session_scope(session_maker) as session:
        env = await session.get(Environment, preview.id)
        assert env is not None
        env.status = "deleted"
    again = await resolve(session_maker, run, named)
    assert again.id == preview.id and again.status == "active"


async def test_runs_that_are_not_a_pull_requests_keep_the_named_environment(
    settings: Settings, session_maker: Any
) -> None:
    run, named = await pull_request_run(session_maker, settings, 6)
    run.metadata_ = {"forge": {"event": "push"}}
    assert (await resolve(session_maker, run, named)).id == named.id
    run.metadata_ = {"forge": {"event": "pull_request", "pr_number": "6; DROP TABLE"}}
    assert (await resolve(session_maker, run, named)).id == named.id
    run.metadata_ = {}
    assert (await resolve(session_maker, run, named)).id == named.id


async def test_forks_and_closed_pull_requests_get_no_preview(
    settings: Settings, session_maker: Any, tmp_path: Path
) -> None:
    fork_run, named = await pull_request_run(session_maker, settings, 7, from_fork=True)
    with pytest.raises(Conflict, match="forks"):
        await resolve(session_maker, fork_run, named)

    run, named = await pull_request_run(session_maker, settings, 8)
    async with session_scope(session_maker) as session:
        session.add(
            PullRequest(
                id=uuid.uuid4(),
                project_id=run.project_id,
                pr_number=8,
                pr_url="",
                repository_name="acme/widgets",
                title="closed",
                branch_name="topic",
                status="merged",
            )
        )
    with pytest.raises(Conflict, match="merged"):
        await resolve(session_maker, run, named)
    async with session_maker() as session:
        previews = await session.scalar(
            select(func.count()).where(
                Environment.project_id.in_([fork_run.project_id, run.project_id]),
                Environment.env_type == "preview",
            )
        )
    assert previews == 0


async def test_a_fork_pull_request_starts_nothing_and_its_comment_says_why(
    api_client, temporal_client: Client, settings: Settings, session_maker: Any, tmp_path: Path
) -> None:
    repo, sha = make_git_repo(tmp_path)
    org = await make_org(session_maker)
    connected = await connect_project(
        session_maker,
        settings,
        org.org_id,
        url=str(repo),
        pipelines=[{"on_pull_request": {}}],
        token="ghp_" + "K" * 36,
    )
    payload = json.loads(github_pull("opened", 11, "topic", sha, "main", sha))
    payload["pull_request"]["head"]["repo"] = {"full_name": "mallory/widgets"}
    with running_fake_forge() as forge:
        forge_settings = settings.model_copy(update={"github_api_url": forge.github_api_url})
        async with integrations_worker(
            temporal_client, forge_settings, session_maker, run_task_queue="unused"
        ):
            outcome = await deliver(
                api_client, temporal_client, connected, json.dumps(payload).encode(), "pull_request"
            )
            assert outcome.status == "ignored" and outcome.run_ids == []
            report = temporal_client.get_workflow_handle(
                pull_request_report_workflow_id(str(connected.project_id), 11)
            )
            await report.result()
        [comment] = forge.comments_on("acme/widgets#11")
    assert "from forks" in comment.body and "preview" in comment.body
    assert await runs_of(session_maker, connected.pipeline_ids) == []


async def test_a_preview_that_went_live_after_its_pull_request_closed_is_torn_down_again(
    settings: Settings, session_maker: Any, temporal_client: Client
) -> None:
    run, named = await pull_request_run(session_maker, settings, 9)
    preview = await resolve(session_maker, run, named)
    async with session_scope(session_maker) as session:
        env = await session.get(Environment, preview.id)
        assert env is not None
        env.status = "deleted"  # the teardown of the pull request's closing ran
        session.add(
            Deployment(
                id=uuid.uuid4(),
                environment_id=preview.id,
                project_id=run.project_id,
                organization_id=run.organization_id,
                version="late",
                status="active",  # a deploy already under way went live afterwards
                provider="static",
                is_preview=True,
            )
        )
        session.add(
            PullRequest(
                id=uuid.uuid4(),
                project_id=run.project_id,
                pr_number=9,
                pr_url="",
                repository_name="acme/widgets",
                title="closed",
                branch_name="topic",
                status="closed",
            )
        )
    ref = PullRequestRef(
        project_id=str(run.project_id), pr_number=9, provider="github", forge_repository="a/b"
    )
    queue = f"no-worker-{uuid.uuid4()}"
    await pr_reports.keep_previews_alive(session_maker, temporal_client, ref, task_queue=queue)
    lifetime = temporal_client.get_workflow_handle(preview_workflow_id(str(preview.id)))
    described = await lifetime.describe()
    assert described.status == WorkflowExecutionStatus.RUNNING and described.task_queue == queue
    history = [e async for e in lifetime.fetch_history_events()]
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert signals == ["teardown"]
    await lifetime.terminate("test done")
