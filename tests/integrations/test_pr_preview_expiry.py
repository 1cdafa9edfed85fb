"""A pull request's preview that expires by its time to live, on real Postgres, Temporal and Caddy
with a fake GitHub (real HTTP server) holding the comment: the one comment is edited to say the
preview expired (never a second comment, never the dead URL), through forge 500s that are
retried without touching the run or the deployment. (An expiry racing a push:
test_pr_preview_expiry_races.py.)"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from temporalio.client import Client

from db.models.deployments import Deployment
from forgeline.settings import DEPLOYMENTS_TASK_QUEUE, Settings
from tests.deployments.helpers import get_app
from tests.integrations.fake_forge import Failure, FakeForge
from tests.integrations.preview_expiry_support import settled, short_lifetime
from tests.integrations.support import commit, deliver, git, make_git_repo, runs_of
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

EXPIRED = "expired (removed when its time to live ran out"


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
