"""Queries of the integrations domain: repositories a delivery may belong to, delivery rows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.integrations import WebhookPayload
from db.models.projects import Project, Repository

# A public repository may be connected to several projects; each has its own secret.
MAX_CANDIDATES = 50


@dataclass(frozen=True)
class RepositoryCandidate:
    repository_id: uuid.UUID
    project_id: uuid.UUID
    organization_id: uuid.UUID | None
    provider: str
    secret_encrypted: str | None


def url_variants(urls: tuple[str, ...]) -> list[str]:
    """Spellings a connected repository's URL may have: with and without `.git` or a slash."""
    variants: set[str] = set()
    for url in urls:
        base = url.strip().rstrip("/").removesuffix(".git")
        if base:
            variants.update({base, base + ".git", base + "/"})
    return sorted(variants)


def _candidates_query() -> Any:
    return select(
        Repository.id,
        Repository.project_id,
        Project.organization_id,
        Repository.provider,
        Repository.webhook_secret_encrypted,
    ).join(Project, Project.id == Repository.project_id)


async def candidates_by_id(
    session: AsyncSession, repository_id: uuid.UUID
) -> list[RepositoryCandidate]:
    rows = await session.execute(_candidates_query().where(Repository.id == repository_id))
    return [RepositoryCandidate(*row) for row in rows]


async def candidates_by_urls(
    session: AsyncSession, urls: tuple[str, ...]
) -> list[RepositoryCandidate]:
    variants = url_variants(urls)
    if not variants:
        return []
    rows = await session.execute(
        _candidates_query().where(Repository.url.in_(variants)).limit(MAX_CANDIDATES)
    )
    return [RepositoryCandidate(*row) for row in rows]


async def insert_delivery(session: AsyncSession, values: dict[str, Any]) -> tuple[uuid.UUID, bool]:
    """(row id, created): a redelivery of the same (provider, delivery_id) finds the first row.
    Concurrent inserts of one delivery create one row (the unique constraint decides)."""
    stmt = (
        insert(WebhookPayload)
        .values(id=uuid.uuid4(), **values)
        .on_conflict_do_nothing(index_elements=["provider", "delivery_id"])
        .returning(WebhookPayload.id)
    )
    created = await session.scalar(stmt)
    if created is not None:
        return created, True
    existing = await session.scalar(
        select(WebhookPayload.id).where(
            WebhookPayload.provider == values["provider"],
            WebhookPayload.delivery_id == values["delivery_id"],
        )
    )
    assert existing is not None  # the conflicting row is committed: it is visible now
    return existing, False


async def record_outcome(
    session: AsyncSession, row_id: uuid.UUID, status: str, error: str | None
) -> bool:
    """The delivery's final status; False when the row is gone."""
    found = await session.scalar(
        update(WebhookPayload)
        .where(WebhookPayload.id == row_id)
        .values(status=status, error=error, processed_at=func.now())
        .returning(WebhookPayload.id)
    )
    return found is not None
