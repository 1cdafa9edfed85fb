"""Preview environments per pull request, end to end on real Postgres, Temporal, git, the sandbox
runner and Caddy, with a fake GitHub (real HTTP server) receiving the comment: a pull request's
run deploys its site to the pull request's own preview, the URL arrives in one comment that every
push edits (never a second comment, not even for 10 concurrent pushes), and closing or merging
the pull request tears the preview down (environment deleted, route gone)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deployments.pipeline_stage import PipelineDeployActivities
from activities.deployments.registration import WORKFLOWS as DEPLOYMENT_WORKFLOWS
from core.deployments.pr_previews import preview_name
from db.models.integrations import PullRequest
from db.models.pipelines import PipelineStage
from db.models.projects import Environment
from db.session import session_scope
from forgeline.settings import DEPLOYMENTS_TASK_QUEUE, Settings
from forgeline.temporal_client import workflow_runner
from infra.proxy_routes import CaddyRoutes
from infra.storage import LocalObjectStore
from tests.deployments.helpers import get_app, make_activities, make_environment
from tests.deployments.proxy import CaddyProcess
from tests.factories import make_org
from tests.integrations.fake_forge import FakeForge
from tests.integrations.support import (
    Connected,
    commit,
    connect_project,
    deliver,
    git,
    github_pull,
    integrations_worker,
    make_git_repo,
    runs_of,
)
from tests.runs.helpers import pipeline_worker, wait_for
from tests.runs.sandbox import sandbox_runner
from workflows.integrations_models import pull_request_report_workflow_id

TOKEN = "ghp_" + "P" * 36
BUILD = (
    "mkdir -p dist && cp page.html dist/index.html && printf 'ok\\n' > dist/healthz"
    ' && printf \'<coverage lines-covered="3" lines-valid="4"/>\' > coverage.xml'
)
THREAD = "acme/widgets#{number}"


@pytest.fixture(scope="module")
def caddy(tmp_root: Path) -> Iterator[CaddyProcess]:
    proc = CaddyProcess(tmp_root / f"caddy-previews-{uuid.uuid4().hex[:6]}")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def pr_settings(settings: Settings, caddy: CaddyProcess, forge: FakeForge) -> Settings:
    return settings.model_copy(
        update={
            "proxy_admin_url": caddy.admin_url,
            "proxy_http_port": caddy.http_port,
            "github_api_url": forge.github_api_url,
            "gitlab_api_url": forge.gitlab_api_url,
        }
    )


@asynccontextmanager
async def workers(
    client: Client, settings: Settings, session_maker: Any, task_queue: str, tmp_path: Path
) -> AsyncIterator[None]:
    store = LocalObjectStore(settings.objects_dir)
    deployments = make_activities(settings, session_maker, client, None)
    stage = PipelineDeployActivities(settings=settings, session_maker=session_maker, store=store)
    deployment_worker = Worker(
        client,
        task_queue=DEPLOYMENTS_TASK_QUEUE,
        workflows=DEPLOYMENT_WORKFLOWS,
        activities=[*deployments.all(), *stage.all()],
        workflow_runner=workflow_runner(),
    )
    runner = sandbox_runner(tmp_path / "runner-state")
    async with (
        deployment_worker,
        integrations_worker(client, settings, session_maker, run_task_queue=task_queue),
        pipeline_worker(client, task_queue, settings, session_maker, runner, store),
    ):
        yield
    await runner.close()


async def preview_project(
    session_maker: Any, settings: Settings, repo: Path, *, deploy: bool = True
) -> Connected:
    """A connected project whose pipeline runs on pull requests: build (publishing a coverage
    report), then deploy to its `staging` environment (a static site)."""
    org = await make_org(session_maker)
    connected = await connect_project(
        session_maker,
        settings,
        org.org_id,
        url=str(repo),
        pipelines=[{"on_pull_request": {"types": ["opened", "synchronize", "reopened"]}}],
        token=TOKEN,
        stages=[{"name": "build", "run": BUILD}],
    )
    if not deploy:
        return connected
    _, staging = await make_environment(
        session_maker, org.org_id, provider="static", project_id=connected.project_id
    )
    async with session_scope(session_maker) as session:
        await session.execute(
            update(PipelineStage)
            .where(PipelineStage.pipeline_id == connected.pipeline_ids[0])
            .values(artifact_paths=["coverage.xml"])
        )
        session.add(
            PipelineStage(
                id=uuid.uuid4(),
                pipeline_id=connected.pipeline_ids[0],
                name="deploy",
                position=1,
                stage_type="deploy",
                timeout_seconds=60,
                commands=[{"run": "test -f dist/index.html"}],
                conditions={"deploy_environment_id": str(staging)},
            )
        )
    return connected


def pull(action: str, number: int, head: str, base: str, **pull: Any) -> bytes:
    payload = json.loads(github_pull(action, number, "topic", head, "main", base))
    payload["pull_request"].update(pull)
    return json.dumps(payload).encode()


async def preview_of(session_maker: Any, connected: Connected, number: int) -> Environment:
    async with session_maker() as session:
        env: Environment | None = await session.scalar(
            select(Environment).where(
                Environment.project_id == connected.project_id,
                Environment.name == preview_name(number),
            )
        )
    assert env is not None
    return env


async def comment_says(forge: FakeForge, number: int, *texts: str, timeout: float = 90) -> None:
    async def arrived() -> bool:
        found = forge.comments_on(THREAD.format(number=number))
        return len(found) == 1 and all(t in found[0].body for t in texts)

    await wait_for(arrived, timeout=timeout)


async def test_pull_request_preview_lifecycle(
    api_client,
    temporal_client: Client,
    forge: FakeForge,
    pr_settings: Settings,
    session_maker,
    tmp_path: Path,
    task_queue: str,
) -> None:
    repo, base = make_git_repo(tmp_path)
    git(repo, "checkout", "-q", "-b", "topic")
    first = commit(repo, {"page.html": "<h1>first version</h1>\n"}, "first")
    connected = await preview_project(session_maker, pr_settings, repo)
    async with workers(temporal_client, pr_settings, session_maker, task_queue, tmp_path):
        outcome = await deliver(
            api_client, temporal_client, connected, pull("opened", 7, first, base), "pull_request"
        )
        assert len(outcome.run_ids) == 1
        # Deployed to the pull request's own preview; the comment carries its URL and commit.
        await comment_says(forge, 7, first[:12], "75.00% of lines")
        env = await preview_of(session_maker, connected, 7)
        assert (env.env_type, env.status, env.preview_pr_number) == ("preview", "active", 7)
        assert env.url and env.url in forge.comments_on(THREAD.format(number=7))[0].body
        page = await get_app(pr_settings, env.url)
        assert page.status_code == 200 and "first version" in page.text
        [comment] = forge.comments_on(THREAD.format(number=7))
        edits_before = comment.edits

        # A push: the same comment is edited to the new commit, the same preview serves it.
        second = commit(repo, {"page.html": "<h1>second version</h1>\n"}, "second")
        await deliver(
            api_client,
            temporal_client,
            connected,
            pull("synchronize", 7, second, base),
            "pull_request",
        )
        await comment_says(forge, 7, second[:12])
        [comment] = forge.comments_on(THREAD.format(number=7))
        assert comment.edits > edits_before
        assert (await preview_of(session_maker, connected, 7)).id == env.id
        page = await get_app(pr_settings, env.url)
        assert "second version" in page.text
        async with session_maker() as session:
            row = await session.scalar(
                select(PullRequest).where(PullRequest.project_id == connected.project_id)
            )
        assert row is not None and row.comment_id == str(comment.id)
        assert row.preview_environment_id == env.id and row.ci_status == "success"
        assert str(row.test_coverage_percentage) == "75.00"
        assert str(row.quality_score) == "90.63"  # 100 * (50 * 1 + 30 * 0.75) / (50 + 30)

        # Merged: the preview is torn down (environment deleted, its route gone).
        await deliver(
            api_client,
            temporal_client,
            connected,
            pull("closed", 7, second, base, merged=True),
            "pull_request",
        )

        async def torn_down() -> bool:
            return (await preview_of(session_maker, connected, 7)).status == "deleted"

        await wait_for(torn_down, timeout=60)
        routes = await CaddyRoutes(
            pr_settings.proxy_admin_url, http_port=pr_settings.proxy_http_port
        ).routes()
        host = env.url.split("://", 1)[1].split(":", 1)[0]
        assert [r.id for r in routes if host in r.hosts] == []
        assert "second version" not in (await get_app(pr_settings, env.url)).text
        await comment_says(forge, 7, "removed (the pull request was merged)")
    assert len(forge.comments_on(THREAD.format(number=7))) == 1


async def test_concurrent_pushes_keep_one_comment(
    api_client,
    temporal_client: Client,
    forge: FakeForge,
    pr_settings: Settings,
    session_maker,
    tmp_path: Path,
    task_queue: str,
) -> None:
    repo, base = make_git_repo(tmp_path)
    git(repo, "checkout", "-q", "-b", "topic")
    heads = [commit(repo, {"page.html": f"<p>{i}</p>\n"}, f"c{i}") for i in range(10)]
    connected = await preview_project(session_maker, pr_settings, repo, deploy=False)
    async with workers(temporal_client, pr_settings, session_maker, task_queue, tmp_path):
        # Ten synchronize deliveries at once, before any comment exists.
        outcomes = await asyncio.gather(
            *(
                deliver(
                    api_client,
                    temporal_client,
                    connected,
                    pull("synchronize", 3, head, base),
                    "pull_request",
                )
                for head in heads
            )
        )
        assert all(o.status == "processed" for o in outcomes)

        async def settled() -> bool:
            runs = await runs_of(session_maker, connected.pipeline_ids)
            return len(runs) == 10 and all(
                r.status in ("success", "cancelled", "failed") for r in runs
            )

        await wait_for(settled, timeout=120)
        await comment_says(forge, 3, "ci-0")
        report = temporal_client.get_workflow_handle(
            pull_request_report_workflow_id(str(connected.project_id), 3)
        )
        await report.result()
    assert len(forge.comments_on(THREAD.format(number=3))) == 1
    created = [r for r in forge.received if r.method == "POST" and "/comments" in r.path]
    assert len(created) == 1
