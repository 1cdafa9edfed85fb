"""Sign-in sessions: login (throttled, with the second factor), rotation and logout."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.accounts import security, sign_in_policy, throttle, totp
from core.accounts.context import AccountContext, utcnow
from core.accounts.errors import TotpRequired
from core.accounts.repository import MemberRepository, SessionRepository, UserRepository
from core.audit.service import write_audit
from core.principal import Principal
from db.models.accounts import User, UserSession
from forgeline.crypto import decrypt_str
from forgeline.errors import Forbidden, RateLimited, Unauthorized

SESSION_TTL = timedelta(days=7)


async def new_session(
    session: AsyncSession,
    ctx: AccountContext,
    user: User,
    organization_id: uuid.UUID,
    *,
    mfa_verified: bool,
) -> tuple[UserSession, str]:
    """A session row (only the token's SHA-256 is stored) and the raw token, shown once."""
    raw, token_hash = security.new_opaque_token(security.SESSION_TOKEN_PREFIX)
    row = UserSession(
        id=uuid.uuid4(),
        user_id=user.id,
        organization_id=organization_id,
        token_hash=token_hash,
        expires_at=utcnow() + SESSION_TTL,
        mfa_verified=mfa_verified,
        ip_address=ctx.origin.ip,
        user_agent=ctx.origin.user_agent,
    )
    session.add(row)
    await session.flush()
    return row, raw


@dataclass(frozen=True)
class ProvenCredentials:
    """A user whose password (and TOTP code, when enabled) matched, and the sign-in counters
    the caller clears once its use of the proof commits."""

    user: User
    clearable: tuple[tuple[throttle.Limit, str], ...]


async def check_credentials(
    session: AsyncSession,
    ctx: AccountContext,
    *,
    email: str,
    password: str,
    totp_code: str | None,
) -> ProvenCredentials:
    """The password and second-factor check of a sign-in, counted by the sign-in throttles
    (login and every other proof of an account share one allowance)."""
    throttles = ctx.throttles
    account = email.strip().lower()
    address = ctx.address_key
    per_pair = (throttle.LOGIN_PER_ACCOUNT_ADDRESS, throttle.subject_digest(account, address))
    per_address = (throttle.LOGIN_PER_ADDRESS, throttle.subject_digest(address))
    per_account = (throttle.LOGIN_PER_ACCOUNT, throttle.subject_digest(account))
    counts = []
    if throttles is not None:
        # Counted before the password is checked, cleared on success: the counts are failures.
        counts = await throttles.hit(per_pair, per_address, per_account)
        throttle.raise_if_exceeded(counts[:2], "Too many sign-in attempts; retry later")
    user = await UserRepository(session).get_by_email(email)
    if counts and counts[2].exceeded:
        # Past the account's ceiling only addresses it signed in from before may keep trying,
        # so a guesser elsewhere slows the account down without locking its owner out.
        ip = ctx.origin.ip
        since = utcnow() - throttle.KNOWN_ADDRESS_AGE
        known = False
        if user is not None and ip is not None:
            known = await SessionRepository(session).used_address(user.id, ip, since)
        if not known:
            raise RateLimited(
                "Too many sign-in attempts for this account; retry later or sign in from a "
                "device you used before",
                retry_after=counts[2].retry_after,
            )
    # verify_password runs Argon2 even for unknown emails: equal timing, no account probing.
    valid = security.verify_password(user.password_hash if user else None, password)
    if user is None or not valid or not user.is_active:
        raise Unauthorized("Invalid email or password")
    if user.totp_enabled:
        if totp_code is None:
            raise TotpRequired("This account requires a TOTP code (totp_code)")
        secret = decrypt_str(user.totp_secret_encrypted or "", ctx.settings)
        if not await totp.accept_code(session, user, secret, totp_code):
            raise Unauthorized("Invalid TOTP code")
    if user.password_hash and security.password_needs_rehash(user.password_hash):
        user.password_hash = security.hash_password(password)
    return ProvenCredentials(user, (per_pair, per_account))


async def clear_counters(
    session: AsyncSession, ctx: AccountContext, proof: ProvenCredentials
) -> None:
    if ctx.throttles is not None:
        await ctx.throttles.clear(session, *proof.clearable)


async def _member_organization(session: AsyncSession, user: User, slug: str | None) -> uuid.UUID:
    """The organization a sign-in opens: the one named by slug, else the user's first; the
    user must be a member of it."""
    members = MemberRepository(session)
    if slug is not None:
        found = await members.organization_by_slug_for_user(slug, user.id)
    else:
        found = await members.first_organization_of(user.id)
    if found is None:
        raise Forbidden("Not a member of that organization")
    return found


async def login(
    session: AsyncSession,
    ctx: AccountContext,
    *,
    email: str,
    password: str,
    totp_code: str | None,
    organization_slug: str | None,
) -> tuple[UserSession, str]:
    proof = await check_credentials(
        session, ctx, email=email, password=password, totp_code=totp_code
    )
    user = proof.user
    row, raw = await sign_in(
        session,
        ctx,
        user,
        organization_slug,
        method="password",
        mfa_verified=user.totp_enabled,
        audit={"mfa": user.totp_enabled},
    )
    await clear_counters(session, ctx, proof)
    return row, raw


async def sign_in(
    session: AsyncSession,
    ctx: AccountContext,
    user: User,
    organization_slug: str | None,
    *,
    method: str,
    mfa_verified: bool,
    audit: dict[str, Any],
) -> tuple[UserSession, str]:
    """A new session of a user whose identity `method` proved, in the organization named by
    slug (else their first), if its sign-in policy allows that method; audited."""
    organization_id = await _member_organization(session, user, organization_slug)
    await sign_in_policy.check(session, organization_id, method)
    user.last_login_at = utcnow()
    row, raw = await new_session(session, ctx, user, organization_id, mfa_verified=mfa_verified)
    await write_audit(
        session,
        None,
        ctx.origin,
        "session.created",
        "session",
        row.id,
        new={"user_id": user.id, **audit},
        organization_id=organization_id,
        actor_user_id=user.id,
    )
    return row, raw


async def _current_session(session: AsyncSession, principal: Principal) -> UserSession:
    assert principal.session_id is not None
    row = await SessionRepository(session).get(principal.session_id)
    if row is None:
        raise Unauthorized("Invalid or revoked session")
    return row


async def refresh(
    session: AsyncSession, ctx: AccountContext, principal: Principal
) -> tuple[UserSession, str]:
    """Rotate: a new token replaces the presented one, which stops working immediately."""
    old = await _current_session(session, principal)
    user = await UserRepository(session).get(old.user_id)
    assert user is not None and old.organization_id is not None
    new, raw = await new_session(
        session, ctx, user, old.organization_id, mfa_verified=old.mfa_verified
    )
    now = utcnow()
    old.revoked_at = now
    old.rotated_at = now
    old.replaced_by_id = new.id
    await write_audit(
        session, principal, ctx.origin, "session.rotated", "session", old.id,
        new={"replaced_by_id": new.id},
    )  # fmt: skip
    return new, raw


async def logout(session: AsyncSession, ctx: AccountContext, principal: Principal) -> None:
    row = await _current_session(session, principal)
    row.revoked_at = utcnow()
    await write_audit(session, principal, ctx.origin, "session.revoked", "session", row.id)


async def current_user(session: AsyncSession, principal: Principal) -> User | None:
    """The signed-in user; None for an API key."""
    if principal.user_id is None:
        return None
    return await UserRepository(session).get(principal.user_id)
