"""Temporal adapters of pull request reports: the summary (checks, coverage, quality score, the
preview's lifetime kept up) and the one forge comment, with the forge's errors mapped to retry
decisions (a rate limit waits the delay the forge asked for)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from activities.integrations.errors import forge_errors
from core.integrations import pr_comments, pr_reports
from forgeline.settings import DEPLOYMENTS_TASK_QUEUE, Settings
from infra.forge_comments import comments_client
from infra.storage import ObjectStore, create_object_store
from workflows.contracts.integrations import PUBLISH_PULL_REQUEST_COMMENT, SUMMARIZE_PULL_REQUEST
from workflows.integrations_models import CommentResult, PullRequestRef


class PullRequestActivities:
    def __init__(
        self,
        settings: Settings,
        session_maker: async_sessionmaker[AsyncSession],
        temporal: Client,
        store: ObjectStore | None = None,
        *,
        deployments_task_queue: str = DEPLOYMENTS_TASK_QUEUE,
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.temporal = temporal
        self.store = store or create_object_store(settings)
        self.deployments_task_queue = deployments_task_queue

    @SUMMARIZE_PULL_REQUEST.implement
    async def summarize_pull_request(self, ref: PullRequestRef) -> None:
        await pr_reports.summarize(self.session_maker, self.store, ref)
        await pr_reports.keep_previews_alive(
            self.session_maker, self.temporal, ref, task_queue=self.deployments_task_queue
        )

    @PUBLISH_PULL_REQUEST_COMMENT.implement
    async def publish_pull_request_comment(self, ref: PullRequestRef) -> CommentResult:
        async with forge_errors():
            return await pr_comments.publish(
                self.session_maker,
                self.settings,
                ref,
                lambda token: comments_client(
                    ref.provider,
                    token=token,
                    github_api_url=self.settings.github_api_url,
                    gitlab_api_url=self.settings.gitlab_api_url,
                ),
            )
