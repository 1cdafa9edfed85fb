"""Console test helpers: sign in through the HTML form, generate from a project page and follow
the task page, and committed rows to look at."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.deployments import Deployment
from db.models.pipelines import (
    Pipeline,
    PipelineRun,
    PipelineStage,
    StageExecution,
    StageLogChunk,
)
from db.models.projects import Environment, Project
from db.session import session_scope
from tests.agent.support import make_project
from tests.factories import OrgFixture, make_org
from tests.runs.helpers import wait_for

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, "no CSRF field in the page"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, org: OrgFixture, **extra: str) -> httpx.Response:
    page = await client.get("/login")
    assert page.status_code == 200
    form = {"csrf": csrf_of(page.text), "email": org.email, "password": org.password, **extra}
    return await client.post("/login", data=form)


async def signed_in_project(
    client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession], repo: Path
) -> tuple[OrgFixture, uuid.UUID]:
    """A new organization with a project on the git repository `repo`, its owner signed in."""
    org = await make_org(session_maker)
    project = await make_project(session_maker, org.org_id, str(repo))
    await sign_in(client, org)
    return org, project


async def submit_generation(
    client: httpx.AsyncClient, project: uuid.UUID, **form: str
) -> httpx.Response:
    """The project page's generate form posted with its CSRF token and the `form` fields."""
    token = csrf_of((await client.get(f"/projects/{project}")).text)
    return await client.post(f"/projects/{project}/agent-tasks", data={"csrf": token, **form})


async def page_until(
    client: httpx.AsyncClient, url: str, shows: Callable[[str], bool], timeout: float
) -> str:
    """The page at `url` (entities unescaped), read again until `shows` accepts it."""
    page: dict[str, str] = {}

    async def shown() -> bool:
        page["html"] = html.unescape((await client.get(url)).text)
        return shows(page["html"])

    await wait_for(shown, timeout=timeout, interval=1.0)
    return page["html"]


@dataclass
class RunRows:
    project_id: uuid.UUID
    pipeline_id: uuid.UUID
    run_id: uuid.UUID


async def make_run(
    session_maker: async_sessionmaker[AsyncSession],
    org: OrgFixture,
    *,
    project_name: str = "Console project",
    log_tail: str = "hello\n",
    status: str = "failed",
) -> RunRows:
    """A project with one pipeline and one finished run whose `build` stage has a log tail."""
    project_id, pipeline_id, run_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with session_scope(session_maker) as session:
        session.add(
            Project(
                id=project_id,
                organization_id=org.org_id,
                name=project_name,
                slug=f"console-{project_id.hex[:12]}",
                project_type="static_site",
                framework="static_html",
                config={},
            )
        )
        await session.flush()
        session.add(
            Pipeline(
                id=pipeline_id,
                project_id=project_id,
                organization_id=org.org_id,
                name="ci",
                next_run_number=2,
            )
        )
        await session.flush()
        session.add(
            PipelineStage(
                pipeline_id=pipeline_id,
                name="build",
                position=0,
                stage_type="build",
                commands=[{"name": "build", "run": "true"}],
            )
        )
        session.add(
            PipelineRun(
                id=run_id,
                pipeline_id=pipeline_id,
                organization_id=org.org_id,
                project_id=project_id,
                run_number=1,
                status=status,
            )
        )
        await session.flush()
        session.add(
            StageExecution(
                run_id=run_id,
                stage_name="build",
                status=status,
                duration_ms=1500,
                log_tail=log_tail,
                log_line_count=log_tail.count("\n"),
            )
        )
    return RunRows(project_id, pipeline_id, run_id)


async def make_deployment(
    session_maker: async_sessionmaker[AsyncSession],
    org: OrgFixture,
    project_id: uuid.UUID,
    *,
    status: str,
    version: str = "v1",
    url: str | None = None,
) -> uuid.UUID:
    """An environment of the project with one deployment in `status`."""
    environment_id, deployment_id = uuid.uuid4(), uuid.uuid4()
    async with session_scope(session_maker) as session:
        session.add(
            Environment(
                id=environment_id,
                project_id=project_id,
                name=f"env-{environment_id.hex[:8]}",
                env_type="staging",
                provider="static",
                config={},
            )
        )
        await session.flush()
        session.add(
            Deployment(
                id=deployment_id,
                environment_id=environment_id,
                project_id=project_id,
                organization_id=org.org_id,
                version=version,
                status=status,
                provider="static",
                url=url,
                approval_protected=status == "awaiting_approval",
            )
        )
    return deployment_id


def log_chunk(execution_id: uuid.UUID, seq: int, first_line: int, content: str) -> StageLogChunk:
    """A stored piece of a stage's log: `content`'s lines, numbered from `first_line`."""
    return StageLogChunk(
        id=uuid.uuid4(),
        stage_execution_id=execution_id,
        seq=seq,
        first_line=first_line,
        line_count=len(content.split("\n")),
        content=content,
    )


async def stage_execution_id(
    session_maker: async_sessionmaker[AsyncSession], run_id: uuid.UUID
) -> uuid.UUID:
    """The id of the run's (one) stage execution."""
    async with session_scope(session_maker) as session:
        execution = await session.scalar(
            select(StageExecution.id).where(StageExecution.run_id == run_id)
        )
    assert execution is not None
    return execution
