"""/v1 routes of forge integrations: the GitHub and GitLab webhook receivers (authenticated by
the repository's webhook secret, not a bearer token) and the webhook secret's rotation."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel

from api.deps import (
    OriginDep,
    ProjectsWriter,
    SessionDep,
    SettingsDep,
    get_temporal,
)
from core.integrations import deliveries, webhook_secrets

router = APIRouter(tags=["integrations"])

RepositoryParam = Annotated[
    uuid.UUID | None,
    Query(description="The connected repository (in the URL shown when its secret was made)"),
]
_WEBHOOK_PROBLEMS: dict[int | str, dict[str, str]] = {
    200: {"description": "ping answered"},
    400: {"description": "Unsupported event or malformed delivery"},
    401: {"description": "Signature or token does not match the repository's webhook secret"},
    404: {"description": "No connected repository matches the delivery"},
    413: {"description": "Payload too large"},
}


class DeliveryOut(BaseModel):
    status: Literal["pong", "accepted", "duplicate", "ignored"]
    delivery_id: str | None = None
    workflow_id: str | None = None
    reason: str | None = None


class WebhookSecretOut(BaseModel):
    """Shown once: paste the URL of your forge and the secret into its webhook form."""

    repository_id: uuid.UUID
    urls: dict[str, str]
    secret: str
    content_type: str


def rejected_deliveries(request: Request) -> deliveries.RejectedDeliveries:
    state = request.app.state
    counter = getattr(state, "rejected_deliveries", None)
    if counter is None:
        counter = state.rejected_deliveries = deliveries.RejectedDeliveries()
    return counter


async def incoming_delivery(
    provider: Literal["github", "gitlab"], request: Request, repository: uuid.UUID | None = None
) -> deliveries.Delivery:
    return deliveries.Delivery(
        provider=provider,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=await request.body(),
        repository_id=repository,
    )


def delivery_out(receipt: deliveries.DeliveryReceipt, response: Response) -> DeliveryOut:
    """The receipt as the forge sees it: a ping is answered 200, anything accepted 202."""
    if receipt.status == "pong":
        response.status_code = status.HTTP_200_OK
    return DeliveryOut(
        status=receipt.status,
        delivery_id=receipt.delivery_id,
        workflow_id=receipt.workflow_id,
        reason=receipt.reason,
    )


async def _receive(
    provider: Literal["github", "gitlab"],
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    repository: uuid.UUID | None,
) -> DeliveryOut:
    receipt = await deliveries.receive(
        session,
        # Temporal is reached only when a verified delivery starts a workflow.
        partial(get_temporal, request),
        settings,
        await incoming_delivery(provider, request, repository),
        rejected_deliveries(request),
    )
    return delivery_out(receipt, response)


@router.post("/webhooks/github", status_code=status.HTTP_202_ACCEPTED, responses=_WEBHOOK_PROBLEMS)
async def github_webhook(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    repository: RepositoryParam = None,
) -> DeliveryOut:
    """A GitHub delivery (push, pull_request, ping), signed with X-Hub-Signature-256."""
    return await _receive("github", request, response, session, settings, repository)


@router.post("/webhooks/gitlab", status_code=status.HTTP_202_ACCEPTED, responses=_WEBHOOK_PROBLEMS)
async def gitlab_webhook(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    repository: RepositoryParam = None,
) -> DeliveryOut:
    """A GitLab delivery (Push Hook, Tag Push Hook, Merge Request Hook) with X-Gitlab-Token."""
    return await _receive("gitlab", request, response, session, settings, repository)


@router.post(
    "/projects/{project_id}/repository/webhook-secret",
    tags=["repositories"],
    status_code=status.HTTP_201_CREATED,
    responses={404: {"description": "Not found (or owned by another organization)"}},
)
async def rotate_webhook_secret(
    project_id: uuid.UUID,
    session: SessionDep,
    principal: ProjectsWriter,
    settings: SettingsDep,
    origin: OriginDep,
) -> WebhookSecretOut:
    """A new webhook secret for the project's repository; the previous one stops working."""
    setup = await webhook_secrets.rotate_secret(session, principal, origin, settings, project_id)
    return WebhookSecretOut(
        repository_id=setup.repository_id,
        urls=setup.urls,
        secret=setup.secret,
        content_type=setup.content_type,
    )
