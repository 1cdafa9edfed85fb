"""The organizations a user belongs to, with their role in each (for an organization switcher)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.accounts import Organization, OrganizationMember

MAX_LISTED = 100


@dataclass(frozen=True)
class Membership:
    organization_id: uuid.UUID
    slug: str
    name: str
    role: str


async def organizations_of(session: AsyncSession, user_id: uuid.UUID) -> list[Membership]:
    rows = await session.execute(
        select(Organization.id, Organization.slug, Organization.name, OrganizationMember.role)
        .join(OrganizationMember, OrganizationMember.organization_id == Organization.id)
        .where(OrganizationMember.user_id == user_id)
        .order_by(Organization.name, Organization.slug)
        .limit(MAX_LISTED)
    )
    return [Membership(*row) for row in rows.all()]
