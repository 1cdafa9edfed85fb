"""Test data builders: a fresh organization per test (API tests commit real data)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.accounts import security
from core.accounts.keys import insert_api_key
from core.accounts.organizations import create_organization_with_owner
from core.accounts.scopes import ALL_SCOPES
from db.models.accounts import OrganizationMember, User
from db.session import session_scope

DEFAULT_PASSWORD = "correct horse battery staple"


@lru_cache(maxsize=1)
def _password_hash() -> str:
    # Argon2 is slow on purpose; hash the shared test password once per session.
    return security.hash_password(DEFAULT_PASSWORD)


@dataclass
class OrgFixture:
    org_id: uuid.UUID
    slug: str
    user_id: uuid.UUID
    email: str
    api_key: str
    api_key_id: uuid.UUID
    headers: dict[str, str]
    owner_user_id: uuid.UUID
    role: str = "owner"
    password: str = DEFAULT_PASSWORD
    scopes: list[str] = field(default_factory=list)


async def make_org(
    session_maker: async_sessionmaker[AsyncSession],
    role: str = "owner",
    scopes: list[str] | None = None,
    *,
    name: str | None = None,
    rate_limit_per_minute: int = 10_000,
    expires_at: datetime | None = None,
) -> OrgFixture:
    """A committed organization with an owner; when `role` is not owner, a second user with that
    role. The API key (all scopes by default) belongs to the user with `role`."""
    suffix = uuid.uuid4().hex[:10]
    scopes = sorted(ALL_SCOPES) if scopes is None else list(scopes)
    async with session_scope(session_maker) as session:
        created = await create_organization_with_owner(
            session,
            organization_name=name or f"Org {suffix}",
            organization_slug=f"org-{suffix}",
            email=f"owner-{suffix}@example.com",
            name=f"Owner {suffix}",
            password_hash=_password_hash(),
        )
        user = created.user
        if role != "owner":
            user = User(
                id=uuid.uuid4(),
                email=f"{role}-{suffix}@example.com",
                name=f"{role.title()} {suffix}",
                password_hash=_password_hash(),
            )
            session.add(user)
            await session.flush()
            session.add(
                OrganizationMember(
                    organization_id=created.organization.id, user_id=user.id, role=role
                )
            )
        key, raw = await insert_api_key(
            session,
            organization_id=created.organization.id,
            created_by_user_id=user.id,
            name=f"test key ({role})",
            scopes=scopes,
            expires_at=expires_at,
            rate_limit_per_minute=rate_limit_per_minute,
        )
    return OrgFixture(
        org_id=created.organization.id,
        slug=created.organization.slug,
        user_id=user.id,
        email=user.email,
        api_key=raw,
        api_key_id=key.id,
        headers={"Authorization": f"Bearer {raw}"},
        owner_user_id=created.user.id,
        role=role,
        scopes=scopes,
    )
