"""/v1 routes of the GitHub App: claiming an installation for the organization, connecting a
project's repository through it, and the App's webhook (signed with the App's secret)."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Body, Request, Response, status
from pydantic import BaseModel, Field

from api.deps import Admin, ProjectsReader, ProjectsWriter, SessionDep, SettingsDep, get_temporal
from api.integrations.endpoints import (
    DeliveryOut,
    delivery_out,
    incoming_delivery,
    rejected_deliveries,
)
from core.integrations import app_deliveries, app_installations
from db.models.projects import GitProviderConnection

router = APIRouter(tags=["integrations"])
_NOT_FOUND: dict[int | str, dict[str, str]] = {
    404: {"description": "Not found (or owned by another organization)"}
}


class InstallationIn(BaseModel):
    installation_id: int = Field(gt=0, lt=2**63, description="From the App's setup redirect")


class InstallationOut(BaseModel):
    id: uuid.UUID
    installation_id: int
    repositories: list[str]
    revoked: bool


class AppRepositoryIn(BaseModel):
    connection_id: uuid.UUID
    repository: str = Field(
        min_length=3, max_length=300, pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"
    )


class AppRepositoryOut(BaseModel):
    repository_id: uuid.UUID
    url: str
    connection_id: uuid.UUID


def _installation(connection: GitProviderConnection) -> InstallationOut:
    assert connection.installation_id is not None
    return InstallationOut(
        id=connection.id,
        installation_id=connection.installation_id,
        repositories=list(connection.installation_repositories),
        revoked=connection.revoked_at is not None,
    )


@router.post(
    "/github-app/installations",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Held by another organization, or no App configured"}},
)
async def claim_installation(
    body: InstallationIn, session: SessionDep, principal: Admin, settings: SettingsDep
) -> InstallationOut:
    """Connect the organization to an installation of the operator's GitHub App."""
    connection = await app_installations.claim_installation(
        session, settings, principal, body.installation_id
    )
    await session.commit()
    return _installation(connection)


@router.get("/github-app/installations/{connection_id}", responses=_NOT_FOUND)
async def get_installation(
    connection_id: uuid.UUID, session: SessionDep, principal: ProjectsReader
) -> InstallationOut:
    connection = await app_installations.organization_installation(
        session, principal, connection_id
    )
    return _installation(connection)


@router.post(
    "/projects/{project_id}/repository/github-app", tags=["repositories"], responses=_NOT_FOUND
)
async def connect_app_repository(
    project_id: uuid.UUID,
    body: Annotated[AppRepositoryIn, Body()],
    session: SessionDep,
    principal: ProjectsWriter,
    settings: SettingsDep,
) -> AppRepositoryOut:
    """The project's repository, reached through a GitHub App installation (no stored token)."""
    repo = await app_installations.connect_repository(
        session, settings, principal, project_id, body.connection_id, body.repository
    )
    await session.commit()
    assert repo.connection_id is not None
    return AppRepositoryOut(repository_id=repo.id, url=repo.url, connection_id=repo.connection_id)


@router.post("/webhooks/github-app", status_code=status.HTTP_202_ACCEPTED)
async def github_app_webhook(
    request: Request, response: Response, session: SessionDep, settings: SettingsDep
) -> DeliveryOut:
    """A delivery of the GitHub App's webhook (installation, installation_repositories,
    check_run/check_suite rerequested, push, pull_request), signed with the App's secret."""

    receipt = await app_deliveries.receive_app(
        session,
        partial(get_temporal, request),
        settings,
        await incoming_delivery("github", request),
        rejected_deliveries(request),
    )
    return delivery_out(receipt, response)
