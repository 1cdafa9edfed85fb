"""API keys: minting (never more scopes than the creator holds), listing and revoking. Only a
key's prefix and SHA-256 are stored; the raw key is returned once."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from core.accounts import security
from core.accounts.context import utcnow
from core.accounts.repository import ApiKeyRepository
from core.accounts.scopes import expand
from core.audit.origin import Origin
from core.audit.service import write_audit
from core.principal import Principal
from db.models.accounts import ApiKey
from forgeline.errors import Forbidden, NotFound, ValidationFailed


async def insert_api_key(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    created_by_user_id: uuid.UUID | None,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    rate_limit_per_minute: int = 600,
) -> tuple[ApiKey, str]:
    """Store a new key (prefix + SHA-256 only) and return it with the raw key, shown once."""
    new = security.generate_api_key()
    key = ApiKey(
        id=uuid.uuid4(),
        organization_id=organization_id,
        created_by_user_id=created_by_user_id,
        name=name,
        key_prefix=new.prefix,
        key_hash=new.hash,
        scopes=sorted(set(scopes)),
        expires_at=expires_at,
        rate_limit_per_minute=rate_limit_per_minute,
    )
    session.add(key)
    await session.flush()
    return key, new.raw


async def create_api_key(
    session: AsyncSession,
    origin: Origin,
    principal: Principal,
    *,
    name: str,
    scopes: list[str],
    expires_at: datetime | None,
    expires_in_days: int | None,
    rate_limit_per_minute: int,
) -> tuple[ApiKey, str]:
    missing = expand(scopes) - principal.scopes
    if missing:
        raise Forbidden(
            "A key cannot have scopes its creator does not hold", scopes=sorted(missing)
        )
    if expires_at is not None and expires_in_days is not None:
        raise ValidationFailed("Give expires_at or expires_in_days, not both", field="expires_at")
    now = utcnow()
    if expires_in_days is not None:
        expires_at = now + timedelta(days=expires_in_days)
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise ValidationFailed("expires_at needs a timezone", field="expires_at")
        if expires_at <= now:
            raise ValidationFailed("expires_at must be in the future", field="expires_at")
    creator = principal.user_id
    if creator is None and principal.api_key_id is not None:
        # A key minted by a key belongs to the same human, so role caps keep applying.
        parent = await ApiKeyRepository(session).get(
            principal.organization_id, principal.api_key_id
        )
        creator = parent.created_by_user_id if parent else None
    key, raw = await insert_api_key(
        session,
        organization_id=principal.organization_id,
        created_by_user_id=creator,
        name=name,
        scopes=scopes,
        expires_at=expires_at,
        rate_limit_per_minute=rate_limit_per_minute,
    )
    await write_audit(
        session, principal, origin, "api_key.created", "api_key", key.id,
        new={"name": name, "key_prefix": key.key_prefix, "scopes": key.scopes,
             "expires_at": expires_at, "rate_limit_per_minute": rate_limit_per_minute},
    )  # fmt: skip
    return key, raw


async def list_api_keys(
    session: AsyncSession, principal: Principal, *, cursor: str | None, limit: int
) -> list[ApiKey]:
    """A page (limit + 1 rows, newest first) of the organization's keys."""
    return await ApiKeyRepository(session).page(
        principal.organization_id, cursor=cursor, limit=limit
    )


async def revoke_api_key(
    session: AsyncSession, origin: Origin, principal: Principal, key_id: uuid.UUID
) -> None:
    key = await ApiKeyRepository(session).get(principal.organization_id, key_id)
    if key is None:
        raise NotFound("API key not found")
    if key.revoked_at is not None:
        return
    key.revoked_at = utcnow()
    await write_audit(
        session, principal, origin, "api_key.revoked", "api_key", key.id,
        old={"revoked_at": None}, new={"revoked_at": key.revoked_at}, severity="notice",
    )  # fmt: skip
