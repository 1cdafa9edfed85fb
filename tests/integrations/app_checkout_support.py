"""A private repository on a loopback git forge that only an installation token of the fake
GitHub App can read, connected to a project through the App; where the minted tokens must
never turn up (rows, workflow histories)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import text
from temporalio.client import Client

from forgeline.settings import Settings
from tests.factories import make_org
from tests.integrations.fake_github_app import FakeGitHubApp
from tests.integrations.git_http_server import GitForge, running_git_forge
from tests.integrations.support import (
    Connected,
    commit,
    connect_project,
    connect_through_app,
    make_git_repo,
)

FULL_NAME = "acme/widgets"


def authorizer(app: FakeGitHubApp, installation: int) -> Any:
    """Tokens the App minted for `installation`, scoped to read the one repository asked for."""

    def authorize(token: str, repository: str) -> bool:
        if token not in app.minted.get(installation, []):
            return False
        scope = app.scopes.get(token, {})
        return scope.get("repositories") == [repository.split("/", 1)[1]] and scope.get(
            "permissions"
        ) == {"contents": "read"}

    return authorize


@contextmanager
def private_forge(app: FakeGitHubApp, installation: int, root: Path) -> Iterator[GitForge]:
    with running_git_forge(root / "forge", authorizer(app, installation)) as forge:
        yield forge


@dataclass
class PrivateRepo:
    work_tree: Path
    before: str
    head: str


def publish_private_repo(forge: GitForge, tmp_path: Path) -> PrivateRepo:
    work_tree, before = make_git_repo(tmp_path)
    head = commit(work_tree, {"src/app.py": "print('private-content')\n"})
    forge.publish(work_tree, FULL_NAME)
    return PrivateRepo(work_tree, before, head)


def forge_settings_for(app_settings: Settings, forge: GitForge) -> Settings:
    """The operator's GitHub is the loopback forge (as GitHub Enterprise would be configured)."""
    return app_settings.model_copy(update={"github_web_url": forge.url})


async def connect_app_project(
    session_maker: Any,
    settings: Settings,
    org_id: uuid.UUID,
    forge: GitForge,
    installation: int,
    **connect: Any,
) -> Connected:
    connected = await connect_project(
        session_maker,
        settings,
        org_id,
        url=f"{forge.url}/{FULL_NAME}.git",
        provider="github",
        **connect,
    )
    await connect_through_app(session_maker, connected, installation)
    return connected


class PrivateProject(NamedTuple):
    forge: GitForge
    repo: PrivateRepo
    settings: Settings
    connected: Connected


@asynccontextmanager
async def private_app_project(
    app: FakeGitHubApp,
    installation: int,
    tmp_path: Path,
    session_maker: Any,
    app_settings: Settings,
    **connect: Any,
) -> AsyncIterator[PrivateProject]:
    """The private repository published on its loopback forge (the operator's GitHub) and
    connected through the App to a project of a new organization."""
    with private_forge(app, installation, tmp_path) as forge:
        repo = publish_private_repo(forge, tmp_path)
        settings = forge_settings_for(app_settings, forge)
        org = await make_org(session_maker)
        connected = await connect_app_project(
            session_maker, settings, org.org_id, forge, installation, **connect
        )
        yield PrivateProject(forge, repo, settings, connected)


async def rows_holding(session_maker: Any, needles: list[str]) -> list[str]:
    """Every row of the tables a run, its stages, logs, deliveries and connections write that
    contains one of `needles`."""
    tables = [
        "pipeline_runs",
        "stage_executions",
        "stage_log_chunks",
        "workflow_executions",
        "webhook_payloads",
        "git_provider_connections",
        "repositories",
        "audit_logs",
    ]
    found: list[str] = []
    async with session_maker() as session:
        for table in tables:
            for needle in needles:
                hit = await session.scalar(
                    text(
                        f"SELECT count(*) FROM {table} t"
                        " WHERE strpos(to_jsonb(t)::text, :needle) > 0"
                    ),
                    {"needle": needle},
                )
                if hit:
                    found.append(table)
    return found


async def histories_since(client: Client, started: datetime) -> str:
    """The JSON histories of every workflow started since `started`."""
    stamp = started.strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    async for execution in client.list_workflows(f"StartTime >= '{stamp}'"):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        out.append((await handle.fetch_history()).to_json())
    return "\n".join(out)
