"""Organizations: sign-up (a new organization with its owner), reading and updating the
caller's organization."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.accounts import security, throttle
from core.accounts.context import AccountContext
from core.accounts.repository import OrganizationRepository, UserRepository
from core.accounts.sessions import new_session
from core.audit.service import write_audit
from core.billing.free_plan import ensure_free_subscription
from core.principal import Principal
from db.models.accounts import Organization, OrganizationMember, User, UserSession
from forgeline.errors import Conflict, NotFound
from forgeline.slugs import slug
from forgeline.statuses.accounts import OrgRole

SLUG_MAX = 50
SLUG_MIN = 2


def organization_slug(name: str) -> str:
    return slug(name, max_length=SLUG_MAX, fallback="org", min_length=SLUG_MIN)


async def _unique_slug(session: AsyncSession, wanted: str | None, name: str) -> str:
    orgs = OrganizationRepository(session)
    if wanted is not None:
        if await orgs.slug_taken(wanted):
            raise Conflict(f"Organization slug {wanted!r} is taken", field="organization_slug")
        return wanted
    base = organization_slug(name)
    made = base
    while await orgs.slug_taken(made):
        made = f"{base}-{secrets.token_hex(3)}"
    return made


@dataclass(frozen=True)
class OrgWithOwner:
    organization: Organization
    user: User
    member: OrganizationMember


async def create_organization_with_owner(
    session: AsyncSession,
    *,
    organization_name: str,
    organization_slug: str | None,
    email: str,
    name: str,
    password_hash: str | None,
    role: str = OrgRole.OWNER,
) -> OrgWithOwner:
    """A new user, a new organization and the membership joining them (role: owner)."""
    email = email.strip().lower()
    if await UserRepository(session).get_by_email(email) is not None:
        raise Conflict("An account with this email already exists", field="email")
    org_slug = await _unique_slug(session, organization_slug, organization_name)
    org = Organization(
        id=uuid.uuid4(), name=organization_name, slug=org_slug, billing_email=email, settings={}
    )
    user = User(id=uuid.uuid4(), email=email, name=name, password_hash=password_hash)
    session.add_all([org, user])
    await session.flush()
    member = OrganizationMember(id=uuid.uuid4(), organization_id=org.id, user_id=user.id, role=role)
    session.add(member)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent sign-up with the same email or slug
        raise Conflict("Email or organization slug already registered") from exc
    return OrgWithOwner(org, user, member)


async def signup(
    session: AsyncSession,
    ctx: AccountContext,
    *,
    email: str,
    password: str,
    name: str,
    organization_name: str,
    organization_slug: str | None,
) -> tuple[OrgWithOwner, UserSession, str]:
    if ctx.throttles is not None:
        counts = await ctx.throttles.hit(
            (throttle.SIGNUP_PER_ADDRESS, throttle.subject_digest(ctx.address_key))
        )
        throttle.raise_if_exceeded(counts, "Too many sign-ups from this address; retry later")
    created = await create_organization_with_owner(
        session,
        organization_name=organization_name,
        organization_slug=organization_slug,
        email=email,
        name=name,
        password_hash=security.hash_password(password),
    )
    # New organizations start on Free (when plans are seeded), so they are billed and limited.
    await ensure_free_subscription(session, created.organization.id)
    user_session, raw = await new_session(
        session, ctx, created.user, created.organization.id, mfa_verified=False
    )
    await write_audit(
        session,
        None,
        ctx.origin,
        "organization.signed_up",
        "organization",
        created.organization.id,
        new={
            "organization": created.organization.slug,
            "owner_email": created.user.email,
            "owner_user_id": created.user.id,
        },
        organization_id=created.organization.id,
        actor_user_id=created.user.id,
    )
    return created, user_session, raw


async def current_organization(session: AsyncSession, principal: Principal) -> Organization:
    org = await OrganizationRepository(session).get(principal.organization_id)
    if org is None:
        raise NotFound("Organization not found")
    return org


async def update_organization(
    session: AsyncSession, ctx: AccountContext, principal: Principal, changes: dict[str, Any]
) -> Organization:
    org = await current_organization(session, principal)
    old = {key: getattr(org, key) for key in changes}
    for key, value in changes.items():
        setattr(org, key, value)
    if changes:
        await write_audit(
            session, principal, ctx.origin, "organization.updated", "organization", org.id,
            old=old, new=changes,
        )  # fmt: skip
    return org
