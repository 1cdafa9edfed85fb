"""An organization's sign-in policy: when its settings name forges (`sign_in_providers`), its
members sign in through one of them only, never with a password."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.accounts import Organization
from forgeline.errors import Forbidden

SIGN_IN_SETTING = "sign_in_providers"


async def required_forges(session: AsyncSession, organization_id: uuid.UUID) -> list[str]:
    """The forges the organization's members must sign in through (empty: any way)."""
    settings = await session.scalar(
        select(Organization.settings).where(Organization.id == organization_id)
    )
    value = (settings or {}).get(SIGN_IN_SETTING)
    return [str(v) for v in value] if isinstance(value, list) else []


async def check(session: AsyncSession, organization_id: uuid.UUID, via: str) -> None:
    """Forbidden when the organization requires a forge and `via` (password, github...) is not
    one of them."""
    forges = await required_forges(session, organization_id)
    if forges and via not in forges:
        raise Forbidden("This organization's members sign in with " + " or ".join(sorted(forges)))
