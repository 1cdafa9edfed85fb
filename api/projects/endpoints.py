"""/v1 routes for projects, their repository and their environments."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel

from api.deps import (
    EnvironmentsConnectionReader,
    OriginDep,
    ProjectsConnectionReader,
    ProjectsReader,
    ProjectsWriter,
    ReadConnectionDep,
    SessionDep,
    SettingsDep,
)
from api.errors import problems
from api.pagination import Page, PageDep, json_page
from api.projects import render
from api.projects.schemas import (
    EnvironmentOut,
    ProjectOut,
    ProjectStatusFilter,
    RepositoryOut,
    WebhookSetupOut,
)
from core.integrations import webhook_secrets
from core.projects import environments, repositories, service
from core.projects.models import (
    EnvironmentCreate,
    EnvironmentType,
    EnvironmentUpdate,
    ProjectCreate,
    ProjectType,
    ProjectUpdate,
    QueryText,
    RepositoryPut,
)

router = APIRouter(tags=["projects"])


def _json(model: BaseModel) -> Response:
    """Hot single-object reads: one pydantic-core serialisation, no second validation pass."""
    return Response(model.model_dump_json(), media_type="application/json")


_PROBLEMS = problems()


@router.post(
    "/projects",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Slug already used"}, 402: {"description": "Plan limit"}},
)
async def create_project(
    body: ProjectCreate,
    session: SessionDep,
    principal: ProjectsWriter,
    settings: SettingsDep,
    origin: OriginDep,
) -> ProjectOut:
    project = await service.create_project(session, principal, origin, settings, body)
    return render.project_out(project)


@router.get("/projects", response_model=Page[ProjectOut])
async def list_projects(
    session: ReadConnectionDep,
    principal: ProjectsConnectionReader,
    page: PageDep,
    status_filter: Annotated[
        ProjectStatusFilter | None,
        Query(
            alias="status",
            description="Filter by status; archived projects are listed only with status=archived.",
        ),
    ] = None,
    project_type: ProjectType | None = None,
    framework: Annotated[QueryText | None, Query(max_length=100)] = None,
    search: Annotated[
        QueryText | None, Query(max_length=100, description="Substring of the name or slug.")
    ] = None,
) -> Response:
    rows = await service.list_projects(
        session,
        principal,
        status=status_filter,
        project_type=project_type,
        framework=framework,
        search=search,
        cursor=page.cursor,
        limit=page.limit,
    )
    return json_page(
        rows,
        limit=page.limit,
        to_model=render.project_read,
        page_model=Page[ProjectOut],
    )


@router.get("/projects/{project_id}", response_model=ProjectOut, responses=_PROBLEMS)
async def get_project(
    project_id: uuid.UUID, session: ReadConnectionDep, principal: ProjectsConnectionReader
) -> Response:
    # Built from the row (its config validated), serialised once here (no response model pass).
    return _json(render.project_read(await service.get_project(session, principal, project_id)))


@router.patch("/projects/{project_id}", responses=_PROBLEMS)
async def update_project(
    project_id: uuid.UUID,
    body: ProjectUpdate,
    session: SessionDep,
    principal: ProjectsWriter,
    settings: SettingsDep,
    origin: OriginDep,
) -> ProjectOut:
    project = await service.update_project(session, principal, origin, settings, project_id, body)
    return render.project_out(project)


@router.post("/projects/{project_id}/archive", responses=_PROBLEMS)
async def archive_project(
    project_id: uuid.UUID, session: SessionDep, principal: ProjectsWriter, origin: OriginDep
) -> ProjectOut:
    return render.project_out(
        await service.set_archived(session, principal, origin, project_id, archived=True)
    )


@router.post("/projects/{project_id}/unarchive", responses=_PROBLEMS)
async def unarchive_project(
    project_id: uuid.UUID, session: SessionDep, principal: ProjectsWriter, origin: OriginDep
) -> ProjectOut:
    return render.project_out(
        await service.set_archived(session, principal, origin, project_id, archived=False)
    )


# --------------------------------------------------------------------------- repository


@router.get("/projects/{project_id}/repository", tags=["repositories"], responses=_PROBLEMS)
async def get_repository(
    project_id: uuid.UUID, session: SessionDep, principal: ProjectsReader
) -> RepositoryOut:
    return render.repository_out(await repositories.get_repository(session, principal, project_id))


@router.put(
    "/projects/{project_id}/repository",
    tags=["repositories"],
    responses={**_PROBLEMS, 201: {"description": "Connected", "model": RepositoryOut}},
)
async def put_repository(
    project_id: uuid.UUID,
    body: RepositoryPut,
    session: SessionDep,
    principal: ProjectsWriter,
    settings: SettingsDep,
    origin: OriginDep,
    response: Response,
) -> RepositoryOut:
    repo, created = await repositories.put_repository(
        session, principal, origin, settings, project_id, body
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    out = render.repository_out(repo)
    if created:
        # Its webhook secret is made with it and shown this once.
        setup = webhook_secrets.issue_secret(settings, repo)
        await session.flush()
        out.webhook = WebhookSetupOut(
            urls=setup.urls, secret=setup.secret, content_type=setup.content_type
        )
    return out


@router.delete(
    "/projects/{project_id}/repository",
    tags=["repositories"],
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_PROBLEMS,
)
async def delete_repository(
    project_id: uuid.UUID, session: SessionDep, principal: ProjectsWriter, origin: OriginDep
) -> None:
    await repositories.delete_repository(session, principal, origin, project_id)


# --------------------------------------------------------------------------- environments


@router.post(
    "/projects/{project_id}/environments",
    tags=["environments"],
    status_code=status.HTTP_201_CREATED,
    responses={**_PROBLEMS, 409: {"description": "Name already used"}},
)
async def create_environment(
    project_id: uuid.UUID,
    body: EnvironmentCreate,
    session: SessionDep,
    principal: ProjectsWriter,
    settings: SettingsDep,
    origin: OriginDep,
) -> EnvironmentOut:
    env = await environments.create_environment(
        session, principal, origin, settings, project_id, body
    )
    return render.environment_out(env)


@router.get(
    "/projects/{project_id}/environments",
    tags=["environments"],
    responses=_PROBLEMS,
    response_model=Page[EnvironmentOut],
)
async def list_environments(
    project_id: uuid.UUID,
    session: ReadConnectionDep,
    principal: EnvironmentsConnectionReader,
    page: PageDep,
    env_type: EnvironmentType | None = None,
) -> Response:
    rows = await environments.list_environments(
        session, principal, project_id, env_type=env_type, cursor=page.cursor, limit=page.limit
    )
    return json_page(
        rows,
        limit=page.limit,
        to_model=render.environment_read,
        page_model=Page[EnvironmentOut],
    )


@router.get(
    "/environments/{environment_id}",
    tags=["environments"],
    response_model=EnvironmentOut,
    responses=_PROBLEMS,
)
async def get_environment(
    environment_id: uuid.UUID, session: ReadConnectionDep, principal: EnvironmentsConnectionReader
) -> Response:
    return _json(
        render.environment_read(
            await environments.get_environment(session, principal, environment_id)
        )
    )


@router.patch("/environments/{environment_id}", tags=["environments"], responses=_PROBLEMS)
async def update_environment(
    environment_id: uuid.UUID,
    body: EnvironmentUpdate,
    session: SessionDep,
    principal: ProjectsWriter,
    settings: SettingsDep,
    origin: OriginDep,
) -> EnvironmentOut:
    env = await environments.update_environment(
        session, principal, origin, settings, environment_id, body
    )
    return render.environment_out(env)


@router.delete(
    "/environments/{environment_id}",
    tags=["environments"],
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_PROBLEMS, 409: {"description": "Still referenced by deployments"}},
)
async def delete_environment(
    environment_id: uuid.UUID, session: SessionDep, principal: ProjectsWriter, origin: OriginDep
) -> None:
    await environments.delete_environment(session, principal, origin, environment_id)
