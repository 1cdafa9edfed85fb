"""The pull request comment after a crash, on real Postgres and a fake GitHub (real HTTP): a
comment posted by an attempt that died before storing its ID is found by its marker and edited,
never posted twice; an unchanged report sends nothing; a comment someone deleted is posted
again."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.integrations import pr_comments
from core.integrations.pull_requests import record_pull_request
from db.models.integrations import PullRequest
from db.session import session_scope
from forgeline.settings import Settings
from infra.forge_comments import comments_client
from tests.factories import make_org
from tests.integrations.fake_forge import Comment, running_fake_forge
from tests.integrations.support import connect_project, make_git_repo
from workflows.integrations_models import ForgeEvent, PullRequestRef

TOKEN = "ghp_" + "R" * 36


async def test_comment_found_again_after_a_crash_and_never_duplicated(
    settings: Settings, session_maker: Any, tmp_path: Path
) -> None:
    repo, sha = make_git_repo(tmp_path)
    org = await make_org(session_maker)
    connected = await connect_project(
        session_maker, settings, org.org_id, url=str(repo), pipelines=[{}], token=TOKEN
    )
    event = ForgeEvent(
        provider="github",
        delivery_id=str(uuid.uuid4()),
        kind="pull_request",
        repository_id=str(connected.repository_id),
        project_id=str(connected.project_id),
        organization_id=str(org.org_id),
        forge_repository="acme/widgets",
        ref_name="topic",
        head_sha=sha,
        pr_number=21,
        pr_action="opened",
        base_branch="main",
    )
    async with session_scope(session_maker) as session:
        await record_pull_request(session, event)
        row = await session.scalar(
            select(PullRequest).where(PullRequest.project_id == connected.project_id)
        )
        assert row is not None
        row.pipeline_checks = {
            str(connected.pipeline_ids[0]): {
                "name": "ci | <b>x</b>\nsecond line",
                "run_id": str(uuid.uuid4()),
                "status": "success",
            }
        }
    ref = PullRequestRef(
        project_id=str(connected.project_id),
        pr_number=21,
        provider="github",
        forge_repository="acme/widgets",
    )
    with running_fake_forge() as forge:
        forge_settings = settings.model_copy(update={"github_api_url": forge.github_api_url})

        def client(token: str) -> Any:
            return comments_client(
                "github", token=token, github_api_url=forge.url, gitlab_api_url=forge.url
            )

        # An earlier attempt posted the comment, then crashed before storing its ID.
        forge.comments[1] = Comment(1, "acme/widgets#21", f"{pr_comments.MARKER}\nold")
        forge.comments[2] = Comment(2, "acme/widgets#21", "a reviewer's comment")
        first = await pr_comments.publish(session_maker, forge_settings, ref, client)
        assert (first.published, first.comment_id) == (True, "1")
        assert len(forge.comments_on("acme/widgets#21")) == 2
        edited = forge.comments[1]
        assert edited.edits == 1 and "ci \\| \\<b\\>x\\</b\\> second line" in edited.body
        assert forge.comments[2].body == "a reviewer's comment"

        # Nothing changed: nothing is sent.
        sent = len(forge.received)
        again = await pr_comments.publish(session_maker, forge_settings, ref, client)
        assert again.reason == "unchanged" and len(forge.received) == sent

        # Someone deleted it: the next change posts a new one and remembers it.
        del forge.comments[1]
        async with session_scope(session_maker) as session:
            row = await session.scalar(
                select(PullRequest).where(PullRequest.project_id == connected.project_id)
            )
            assert row is not None
            row.quality_score = None
            row.test_coverage_percentage = Decimal(50)
        third = await pr_comments.publish(session_maker, forge_settings, ref, client)
        assert third.published and third.comment_id == "3"
        mine = [c for c in forge.comments_on("acme/widgets#21") if pr_comments.MARKER in c.body]
        assert [c.id for c in mine] == [3] and "50" in mine[0].body
    async with session_maker() as session:
        stored = await session.scalar(
            select(PullRequest.comment_id).where(PullRequest.project_id == connected.project_id)
        )
    assert stored == "3"
