"""Per-repository webhook secrets: generated on connect or rotation, stored encrypted, shown
once (the response that creates one is the only place it appears)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from core.audit.origin import Origin
from core.audit.service import write_audit
from core.principal import Principal
from core.projects.repositories import get_repository
from core.projects.service import refuse_if_archived, require_project
from db.models.projects import Repository
from forgeline.crypto import encrypt_str
from forgeline.settings import Settings

SECRET_BYTES = 32
# Forges whose webhooks carry an event type Forgeline understands.
WEBHOOK_PATHS = {"github": "/v1/webhooks/github", "gitlab": "/v1/webhooks/gitlab"}


@dataclass(frozen=True)
class WebhookSetup:
    """What to paste into the forge's webhook form; `secret` is never readable again."""

    repository_id: uuid.UUID
    urls: dict[str, str]
    secret: str
    content_type: str = "application/json"


def webhook_urls(settings: Settings, repository_id: uuid.UUID) -> dict[str, str]:
    base = settings.public_base_url.rstrip("/")
    return {
        provider: f"{base}{path}?repository={repository_id}"
        for provider, path in WEBHOOK_PATHS.items()
    }


def issue_secret(settings: Settings, repo: Repository) -> WebhookSetup:
    """A new secret on `repo` (the caller's unit of work stores it); the old one stops working."""
    secret = secrets.token_urlsafe(SECRET_BYTES)
    repo.webhook_secret_encrypted = encrypt_str(secret, settings)
    return WebhookSetup(repository_id=repo.id, urls=webhook_urls(settings, repo.id), secret=secret)


async def rotate_secret(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    settings: Settings,
    project_id: uuid.UUID,
) -> WebhookSetup:
    project = await require_project(session, principal, project_id, for_update=True)
    refuse_if_archived(project)
    repo = await get_repository(session, principal, project.id)
    had_secret = repo.webhook_secret_encrypted is not None
    setup = issue_secret(settings, repo)
    await session.flush()
    await write_audit(
        session,
        principal,
        origin,
        "repository.webhook_secret_rotated" if had_secret else "repository.webhook_secret_created",
        "repository",
        repo.id,
        metadata={"project_id": str(project.id)},
    )
    return setup
