"""A pull request's preview whose time to live runs out while a push deploys to it, on real
Postgres and Temporal with a fake GitHub (real HTTP server) holding the comment: whichever takes
the deploy lock first, the push's preview stays (or comes back) live and the one comment shows
its URL, never `expired`."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import select, text
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from core.deployments.pr_previews import tear_down_environment
from core.deployments.providers.base import ReleaseProvider
from core.integrations import pr_reports
from db.models.deployments import Deployment
from db.models.projects import Environment
from forgeline.settings import Settings
from tests.deployments.helpers import make_activities, running_worker
from tests.integrations.fake_forge import FakeForge
from tests.integrations.preview_expiry_support import (
    SHA_A,
    SHA_B,
    deploy,
    goes_live,
    pull_request_run,
    settled,
    short_lifetime,
    tracked_pull_request,
)
from tests.integrations.support import integrations_worker
from tests.integrations.test_pr_previews import (  # noqa: F401  (caddy, pr_settings: fixtures)
    THREAD,
    caddy,
    comment_says,
    pr_settings,
)
from tests.runs.helpers import wait_for
from workflows.deployment_models import TeardownRequest


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
