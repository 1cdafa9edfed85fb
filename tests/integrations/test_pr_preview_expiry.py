"""A pull request's preview that expires by its time to live, on real Postgres, Temporal and Caddy
with a fake GitHub (real HTTP server) holding the comment: the one comment is edited to say the
preview expired (never a second comment, never the dead URL), through forge 500s that are
retried without touching the run or the deployment; an expiry racing a push leaves the push's
preview live and the comment showing its URL, whichever takes the deploy lock first."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import select, text, update
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError

from core.deployments.pr_previews import preview_for_run, tear_down_environment
from core.deployments.providers.base import ReleaseProvider
from core.integrations import pr_reports
from db.models.deployments import Deployment
from db.models.integrations import PullRequest
from db.models.pipelines import PipelineRun
from db.models.projects import Environment
from db.session import session_scope
from forgeline.settings import DEPLOYMENTS_TASK_QUEUE, Settings
from tests.deployments.helpers import get_app, make_activities, make_environment, running_worker
from tests.factories import make_org
from tests.integrations.fake_forge import Failure, FakeForge
from tests.integrations.support import (
    Connected,
    commit,
    connect_project,
    deliver,
    git,
    integrations_worker,
    make_git_repo,
    runs_of,
)
from tests.integrations.test_pr_previews import (  # noqa: F401  (caddy, pr_settings: fixtures)
    THREAD,
    TOKEN,
    caddy,
    comment_says,
    pr_settings,
    preview_of,
    preview_project,
    pull,
    workers,
)
from tests.runs.helpers import create_run, wait_for
from workflows.deployment_models import PreviewInput, TeardownRequest
from workflows.integrations_models import pull_request_report_workflow_id
from workflows.preview import PreviewEnvironmentWorkflow, preview_workflow_id

EXPIRED = "expired (removed when its time to live ran out"
SHA_A, SHA_B = "a" * 40, "b" * 40


async def short_lifetime(
    client: Client, env: Environment, org_id: uuid.UUID, ttl: float, task_queue: str
) -> WorkflowHandle[Any, str]:
    """The preview's lifetime with a time to live of `ttl` seconds (a real one lasts days):
    the running one ends, a new one starts under the same ID."""
    workflow_id = preview_workflow_id(str(env.id))
    with contextlib.suppress(RPCError):
        await client.get_workflow_handle(workflow_id).terminate("a shorter time to live")
    return await client.start_workflow(
        PreviewEnvironmentWorkflow.run,
        PreviewInput(
            environment_id=str(env.id),
            organization_id=str(org_id),
            project_id=str(env.project_id),
            provider=env.provider,
            ttl_seconds=ttl,
        ),
        id=workflow_id,
        task_queue=task_queue,
    )


async def settled(client: Client, connected: Connected, number: int) -> None:
    """Until the pull request's report has no pass left (none outlives its test's forge)."""
    report = pull_request_report_workflow_id(str(connected.project_id), number)
    await client.get_workflow_handle(report).result()


async def test_an_expired_preview_edits_its_comment_in_place(
    api_client,
    temporal_client: Client,
    forge: FakeForge,
    pr_settings: Settings,  # noqa: F811
    session_maker,
    tmp_path: Path,
    task_queue: str,
) -> None:
    repo, base = make_git_repo(tmp_path)
    git(repo, "checkout", "-q", "-b", "topic")
    head = commit(repo, {"page.html": "<h1>short-lived</h1>\n"}, "first")
    connected = await preview_project(session_maker, pr_settings, repo)
    thread = THREAD.format(number=12)
    async with workers(temporal_client, pr_settings, session_maker, task_queue, tmp_path):
        await deliver(
            api_client, temporal_client, connected, pull("opened", 12, head, base), "pull_request"
        )
        await comment_says(forge, 12, head[:12], "success")
        await settled(temporal_client, connected, 12)
        env = await preview_of(session_maker, connected, 12)
        assert env.url and "short-lived" in (await get_app(pr_settings, env.url)).text
        [before] = forge.comments_on(thread)
        edits = before.edits  # the fake edits the same object

        # The forge answers the next two comment requests with a 500: the edit is retried.
        forge.fail_comments(Failure(500), Failure(500))
        lifetime = await short_lifetime(
            temporal_client, env, connected.org_id, 0.5, DEPLOYMENTS_TASK_QUEUE
        )
        assert await lifetime.result() == "ttl expired"
        await comment_says(forge, 12, EXPIRED)
        [after] = forge.comments_on(thread)
        assert after.id == before.id and after.edits > edits
        assert env.url not in after.body and head[:12] not in after.body
        refused = [r for r in forge.received if r.method == "PATCH" and r.answered == 500]
        assert len(refused) == 2

        # The run is as it ended; its deployment served until the expiry superseded it.
        [run] = await runs_of(session_maker, connected.pipeline_ids)
        assert run.status == "success"
        async with session_maker() as session:
            deployments = list(
                await session.scalars(select(Deployment).where(Deployment.environment_id == env.id))
            )
        assert [(d.status, d.error) for d in deployments] == [
            ("superseded", "preview torn down: ttl expired")
        ]
        assert (await preview_of(session_maker, connected, 12)).status == "deleted"
        assert "short-lived" not in (await get_app(pr_settings, env.url)).text
        await settled(temporal_client, connected, 12)
    assert len(forge.comments_on(thread)) == 1
    created = [r for r in forge.received if r.method == "POST" and "/comments" in r.path]
    assert len(created) == 1


@dataclass
class Tracked:
    connected: Connected
    named_id: uuid.UUID
    number: int


async def tracked_pull_request(session_maker: Any, settings: Settings, number: int) -> Tracked:
    org = await make_org(session_maker)
    connected = await connect_project(
        session_maker,
        settings,
        org.org_id,
        url="https://forge.invalid/acme/widgets.git",
        pipelines=[{"on_pull_request": {}}],
        token=TOKEN,
    )
    _, named_id = await make_environment(
        session_maker, org.org_id, provider="static", project_id=connected.project_id
    )
    async with session_scope(session_maker) as session:
        session.add(
            PullRequest(
                id=uuid.uuid4(),
                project_id=connected.project_id,
                repository_id=connected.repository_id,
                pr_number=number,
                pr_url="",
                repository_name="acme/widgets",
                title="topic",
                branch_name="topic",
                status="open",
            )
        )
    return Tracked(connected, named_id, number)


async def pull_request_run(
    session_maker: Any, settings: Settings, tracked: Tracked, status: str
) -> PipelineRun:
    connected = tracked.connected
    created = await create_run(
        session_maker, settings, connected.org_id, connected.pipeline_ids[0], branch="topic"
    )
    async with session_scope(session_maker) as session:
        run = await session.get(PipelineRun, created.id)
        assert run is not None
        run.project_id = connected.project_id
        run.status = status
        run.metadata_ = {
            "forge": {
                "event": "pull_request",
                "pr_number": tracked.number,
                "provider": "github",
                "repository": "acme/widgets",
            }
        }
    return run


async def deploy(
    session_maker: Any,
    tracked: Tracked,
    run: PipelineRun,
    sha: str,
    status: str,
    created_at: datetime | None = None,
) -> tuple[Environment, uuid.UUID]:
    """What a deploy stage does first, in one transaction: the preview (under its lock) and the
    deployment row."""
    async with session_scope(session_maker) as session:
        named = await session.get(Environment, tracked.named_id)
        assert named is not None
        env = await preview_for_run(session, run, named)
        env.url = env.url or f"http://pr-{tracked.number}-{uuid.uuid4().hex[:6]}.sites.test"
        deployment = Deployment(
            id=uuid.uuid4(),
            environment_id=env.id,
            project_id=run.project_id,
            organization_id=run.organization_id,
            pipeline_run_id=run.id,
            version=sha[:12],
            commit_sha=sha,
            status=status,
            provider="static",
            is_preview=True,
        )
        if created_at is not None:
            deployment.created_at = created_at
        session.add(deployment)
    return env, deployment.id


async def goes_live(session_maker: Any, run: PipelineRun, live: uuid.UUID) -> None:
    """The push's deployment went live (the one before it superseded) and its run succeeded."""
    async with session_scope(session_maker) as session:
        row = await session.get(Deployment, live)
        assert row is not None
        await session.execute(
            update(Deployment)
            .where(Deployment.environment_id == row.environment_id, Deployment.id != live)
            .where(Deployment.status == "active")
            .values(status="superseded")
        )
        row.status = "active"
        await session.execute(
            update(PipelineRun).where(PipelineRun.id == run.id).values(status="success")
        )


async def teardown_refused(handle: WorkflowHandle[Any, str]) -> bool:
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_failed_event_attributes"):
            failure = event.activity_task_failed_event_attributes.failure
            if failure.application_failure_info.type == "PreviewInUse":
                return True
    return False


async def test_an_expiry_during_a_push_keeps_the_push_preview(
    temporal_client: Client,
    forge: FakeForge,
    pr_settings: Settings,  # noqa: F811
    session_maker,
    task_queue: str,
) -> None:
    tracked = await tracked_pull_request(session_maker, pr_settings, 21)
    thread = THREAD.format(number=21)
    first = await pull_request_run(session_maker, pr_settings, tracked, "success")
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    env, _ = await deploy(session_maker, tracked, first, SHA_A, "active", long_ago)
    assert env.url
    activities = make_activities(pr_settings, session_maker, temporal_client, None)
    async with (
        integrations_worker(temporal_client, pr_settings, session_maker, run_task_queue="none"),
        running_worker(temporal_client, task_queue, activities),
    ):
        await pr_reports.request_for_run(
            session_maker, temporal_client, first.id, task_queue=pr_settings.integrations_task_queue
        )
        await comment_says(forge, 21, env.url, SHA_A[:12])
        # A push begins deploying to the preview; its time to live runs out meanwhile.
        push = await pull_request_run(session_maker, pr_settings, tracked, "running")
        _, pushed = await deploy(session_maker, tracked, push, SHA_B, "building")
        lifetime = await short_lifetime(
            temporal_client, env, tracked.connected.org_id, 0.2, task_queue
        )

        await wait_for(functools.partial(teardown_refused, lifetime), timeout=30)
        # Nothing was torn down and the lifetime waits again.
        assert (await lifetime.describe()).status == WorkflowExecutionStatus.RUNNING
        async with session_maker() as session:
            kept = await session.get(Environment, env.id)
            statuses = dict(
                (await session.execute(
                    select(Deployment.commit_sha, Deployment.status).where(
                        Deployment.environment_id == env.id
                    )
                )).all()
            )  # fmt: skip
        assert kept is not None and kept.status == "active"
        assert statuses == {SHA_A: "active", SHA_B: "building"}
        await lifetime.terminate("the short time to live was a stand-in")

        await goes_live(session_maker, push, pushed)
        await pr_reports.request_for_run(
            session_maker, temporal_client, push.id, task_queue=pr_settings.integrations_task_queue
        )
        await comment_says(forge, 21, env.url, SHA_B[:12])
        await settled(temporal_client, tracked.connected, 21)
        [comment] = forge.comments_on(thread)
        assert "expired" not in comment.body and env.url in comment.body


class GatedTeardown:
    """A release provider whose teardown waits for the test's go, then does the real one."""

    def __init__(self, inner: ReleaseProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def teardown(self, environment_id: str, config: Any) -> list[str]:
        self.entered.set()
        await self.go.wait()
        return await self.inner.teardown(environment_id, config)


async def lock_awaited(session_maker: Any) -> bool:
    async with session_maker() as session:
        waiting = await session.scalar(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )
    return bool(waiting)


async def test_a_push_after_the_expiry_took_the_lock_gets_its_preview_back(
    temporal_client: Client,
    forge: FakeForge,
    pr_settings: Settings,  # noqa: F811
    session_maker,
) -> None:
    tracked = await tracked_pull_request(session_maker, pr_settings, 22)
    thread = THREAD.format(number=22)
    first = await pull_request_run(session_maker, pr_settings, tracked, "success")
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    env, old = await deploy(session_maker, tracked, first, SHA_A, "active", long_ago)
    assert env.url
    static = make_activities(pr_settings, session_maker, temporal_client, None).providers
    gated = GatedTeardown(static.get("static"))
    async with integrations_worker(
        temporal_client, pr_settings, session_maker, run_task_queue="none"
    ):
        await pr_reports.request_for_run(
            session_maker, temporal_client, first.id, task_queue=pr_settings.integrations_task_queue
        )
        await comment_says(forge, 22, env.url, SHA_A[:12])
        # The expiry's teardown holds the deploy lock ...
        expiry = asyncio.create_task(
            tear_down_environment(
                session_maker,
                cast(ReleaseProvider, gated),
                TeardownRequest(
                    environment_id=str(env.id),
                    provider="static",
                    reason="ttl expired",
                    quiet_since=datetime.now(UTC) - timedelta(minutes=1),
                ),
            )
        )
        await asyncio.wait_for(gated.entered.wait(), timeout=30)
        # ... so the push's deploy waits for it, then brings the preview back.
        push = await pull_request_run(session_maker, pr_settings, tracked, "running")
        pushing = asyncio.create_task(deploy(session_maker, tracked, push, SHA_B, "building"))

        await wait_for(functools.partial(lock_awaited, session_maker), timeout=30)
        assert not pushing.done()
        gated.go.set()
        await expiry
        revived, pushed = await pushing
        assert revived.id == env.id and revived.status == "active"
        async with session_maker() as session:
            torn = await session.get(Deployment, old)
        assert torn is not None and torn.status == "superseded"

        # The expiry's report, then the push's once its deployment is live.
        await pr_reports.request_for_preview(
            session_maker,
            temporal_client,
            str(env.id),
            task_queue=pr_settings.integrations_task_queue,
        )
        await goes_live(session_maker, push, pushed)
        await pr_reports.request_for_run(
            session_maker, temporal_client, push.id, task_queue=pr_settings.integrations_task_queue
        )
        await comment_says(forge, 22, env.url, SHA_B[:12])
        await settled(temporal_client, tracked.connected, 22)
        [comment] = forge.comments_on(thread)
        assert "expired" not in comment.body and env.url in comment.body
