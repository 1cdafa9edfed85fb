"""Builders for integration tests: a local git repository with history, a connected project
with pipelines and a webhook secret, signed deliveries, the integrations worker and the workers
that run what events start."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.integrations.activities import IntegrationActivities
from activities.integrations.pull_requests import PullRequestActivities
from activities.integrations.registration import WORKFLOWS
from core.integrations.signatures import github_signature
from core.integrations.webhook_secrets import issue_secret
from db.models.integrations import WebhookPayload
from db.models.pipelines import Pipeline, PipelineRun, PipelineStage
from db.models.projects import GitProviderConnection, Project, Repository
from db.session import session_scope
from forgeline.crypto import encrypt_str
from forgeline.settings import Settings
from forgeline.temporal_client import workflow_runner
from tests.factories import make_org
from tests.integrations.fake_forge import FakeForge
from tests.runs.helpers import pipeline_worker, wait_for
from tests.runs.sandbox import sandbox_runner
from workflows.integrations_models import DeliveryOutcome, webhook_delivery_workflow_id
from workflows.webhook_delivery import WebhookDeliveryWorkflow

ZERO = "0" * 40


def git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    out = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str = "change") -> str:
    for name, content in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_git_repo(root: Path) -> tuple[Path, str]:
    """A repository on `main` with one commit; returns (path, sha)."""
    repo = root / f"repo-{uuid.uuid4().hex[:8]}"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    sha = commit(repo, {"README.md": "hello\n", "src/app.py": "print(1)\n"}, "initial")
    return repo, sha


def topic_repo(root: Path, files: dict[str, str]) -> tuple[Path, str, str]:
    """A repository whose `topic` branch adds one commit of `files` on top of `main`; returns
    (path, main's sha, the topic's sha), the topic checked out."""
    repo, base = make_git_repo(root)
    git(repo, "checkout", "-q", "-b", "topic")
    return repo, base, commit(repo, files, "feature")


@dataclass
class Connected:
    org_id: uuid.UUID
    project_id: uuid.UUID
    repository_id: uuid.UUID
    secret: str
    pipeline_ids: list[uuid.UUID]


async def connect_project(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    org_id: uuid.UUID,
    *,
    url: str,
    provider: str = "local",
    pipelines: list[dict[str, Any]],
    token: str | None = None,
    stages: list[dict[str, Any]] | None = None,
) -> Connected:
    """A project whose repository has a webhook secret, and one pipeline per triggers dict."""
    suffix = uuid.uuid4().hex[:8]
    async with session_scope(session_maker) as session:
        project = Project(
            id=uuid.uuid4(),
            organization_id=org_id,
            name=f"Hooks {suffix}",
            slug=f"hooks-{suffix}",
            project_type="api",
        )
        session.add(project)
        await session.flush()
        repo = Repository(
            id=uuid.uuid4(),
            project_id=project.id,
            provider=provider,
            url=url,
            default_branch="main",
            access_token_encrypted=encrypt_str(token, settings) if token else None,
        )
        session.add(repo)
        setup = issue_secret(settings, repo)
        ids = []
        for index, triggers in enumerate(pipelines):
            pipeline = Pipeline(
                id=uuid.uuid4(),
                project_id=project.id,
                organization_id=org_id,
                name=f"ci-{index}",
                triggers=triggers,
                retry_policy={"initial_interval_seconds": 0.2},
            )
            session.add(pipeline)
            await session.flush()
            for position, spec in enumerate(stages or [{"name": "noop", "run": "true"}]):
                session.add(
                    PipelineStage(
                        id=uuid.uuid4(),
                        pipeline_id=pipeline.id,
                        name=spec["name"],
                        position=position,
                        stage_type="custom",
                        commands=[{"run": spec["run"]}],
                        timeout_seconds=60,
                    )
                )
            ids.append(pipeline.id)
    return Connected(org_id, project.id, repo.id, setup.secret, ids)


async def connect_repo(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    repo: Path,
    **connect: Any,
) -> Connected:
    """A new organization's project connected to the local repository `repo` (see
    connect_project for the pipelines, stages and token)."""
    org = await make_org(session_maker)
    return await connect_project(session_maker, settings, org.org_id, url=str(repo), **connect)


def github_headers(
    secret: str, body: bytes, event: str = "push", delivery: str | None = None
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": github_signature(secret, body),
    }


def github_push(
    ref: str,
    after: str,
    before: str = ZERO,
    *,
    full_name: str = "acme/widgets",
    clone_url: str = "https://github.com/acme/widgets.git",
    deleted: bool = False,
    **extra: Any,
) -> bytes:
    return json.dumps(
        {
            **extra,
            "ref": ref,
            "before": before,
            "after": after,
            "deleted": deleted,
            "created": before == ZERO,
            "repository": {
                "full_name": full_name,
                "clone_url": clone_url,
                "html_url": clone_url.removesuffix(".git"),
            },
        }
    ).encode()


def github_pull(
    action: str, number: int, head_ref: str, head_sha: str, base_ref: str, base_sha: str
) -> bytes:
    return json.dumps(
        {
            "action": action,
            "number": number,
            "pull_request": {
                "head": {"ref": head_ref, "sha": head_sha, "repo": {"full_name": "acme/widgets"}},
                "base": {"ref": base_ref, "sha": base_sha, "repo": {"full_name": "acme/widgets"}},
                "merged": False,
            },
            "repository": {"full_name": "acme/widgets"},
        }
    ).encode()


@asynccontextmanager
async def integrations_worker(
    client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    *,
    run_task_queue: str,
) -> AsyncIterator[Worker]:
    """The integrations workflows and activities on the settings' integrations queue (each
    test's own); runs start on `run_task_queue`."""
    activities = IntegrationActivities(
        settings, session_maker, client, run_task_queue=run_task_queue
    )
    pull_requests = PullRequestActivities(settings, session_maker, client)
    worker = Worker(
        client,
        task_queue=settings.integrations_task_queue,
        workflows=WORKFLOWS,
        activities=[
            activities.match_triggers,
            activities.compute_changed_paths,
            activities.start_runs,
            activities.start_scheduled_run,
            activities.record_delivery_outcome,
            activities.record_pull_request,
            activities.report_commit_status,
            pull_requests.summarize_pull_request,
            pull_requests.publish_pull_request_comment,
        ],
        workflow_runner=workflow_runner(True),
    )
    async with worker:
        yield worker


async def runs_of(
    session_maker: async_sessionmaker[AsyncSession], pipeline_ids: list[uuid.UUID]
) -> list[PipelineRun]:
    async with session_maker() as session:
        rows = await session.scalars(
            select(PipelineRun)
            .where(PipelineRun.pipeline_id.in_(pipeline_ids))
            .order_by(PipelineRun.created_at)
        )
        return list(rows)


async def deliveries_of(
    session_maker: async_sessionmaker[AsyncSession], project_id: uuid.UUID
) -> list[WebhookPayload]:
    async with session_maker() as session:
        rows = await session.scalars(
            select(WebhookPayload).where(WebhookPayload.project_id == project_id)
        )
        return list(rows)


async def deliver(
    api_client: Any, client: Client, connected: Connected, body: bytes, event: str = "push"
) -> DeliveryOutcome:
    """Send one signed GitHub delivery and wait for its processing workflow's outcome."""
    delivery = str(uuid.uuid4())
    r = await api_client.post(
        f"/v1/webhooks/github?repository={connected.repository_id}",
        content=body,
        headers=github_headers(connected.secret, body, event, delivery),
    )
    assert r.status_code == 202, r.text
    handle = client.get_workflow_handle_for(
        WebhookDeliveryWorkflow.run, webhook_delivery_workflow_id("github", delivery)
    )
    return await handle.result()


@asynccontextmanager
async def run_workers(
    client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    task_queue: str,
    tmp_path: Path,
) -> AsyncIterator[None]:
    """The integrations worker and a pipelines worker (sandbox runner) on `task_queue`: events
    start runs and the runs execute."""
    runner = sandbox_runner(tmp_path / "runner-state")
    try:
        async with (
            integrations_worker(client, settings, session_maker, run_task_queue=task_queue),
            pipeline_worker(client, task_queue, settings, session_maker, runner),
        ):
            yield
    finally:
        await runner.close()


async def repo_with_change(
    tmp_path: Path,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    change: dict[str, str],
    **connect: Any,
) -> tuple[Connected, str, str]:
    """A connected repository whose main has one commit (`change`) the forge has not announced
    yet: (connected, head, the commit before it)."""
    repo, first = make_git_repo(tmp_path)
    head = commit(repo, change)
    return await connect_repo(session_maker, settings, repo, **connect), head, first


async def push_main(api_client: Any, connected: Connected, head: str, before: str) -> None:
    """GitHub's push of main from `before` to `head`, delivered to the repository's webhook."""
    body = github_push("refs/heads/main", head, before)
    r = await api_client.post(
        f"/v1/webhooks/github?repository={connected.repository_id}",
        content=body,
        headers=github_headers(connected.secret, body),
    )
    assert r.status_code == 202, r.text


async def the_run(session_maker: Any, connected: Connected) -> PipelineRun:
    """The one run the connected repository's pipelines started (waits for it)."""

    async def created() -> bool:
        return bool(await runs_of(session_maker, connected.pipeline_ids))

    await wait_for(created, timeout=60)
    (run,) = await runs_of(session_maker, connected.pipeline_ids)
    return run


async def finished(session_maker: Any, connected: Connected, timeout: float = 60) -> PipelineRun:
    """That run once it has ended (success, failed or cancelled)."""

    async def done() -> bool:
        runs = await runs_of(session_maker, connected.pipeline_ids)
        return bool(runs) and runs[0].status in ("success", "failed", "cancelled")

    await wait_for(done, timeout=timeout)
    return await the_run(session_maker, connected)


async def reported(forge: FakeForge, sha: str, description: str) -> None:
    """Until the forge's latest accepted status of `sha` is `description`."""

    async def arrived() -> bool:
        return [r.body["description"] for r in forge.accepted(sha)][-1:] == [description]

    await wait_for(arrived, timeout=60)


async def connect_through_app(session_maker: Any, connected: Connected, installation: int) -> None:
    """The connected repository reached through the GitHub App's `installation` instead."""
    async with session_scope(session_maker) as session:
        connection = GitProviderConnection(
            id=uuid.uuid4(),
            organization_id=connected.org_id,
            provider="github",
            installation_id=installation,
            installation_repositories=["acme/widgets"],
        )
        session.add(connection)
        await session.flush()
        await session.execute(
            update(Repository)
            .where(Repository.id == connected.repository_id)
            .values(connection_id=connection.id)
        )
