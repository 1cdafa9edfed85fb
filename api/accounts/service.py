"""Accounts business rules: sign-up, sessions, password reset, TOTP, members, API keys, and
resolving a bearer credential into a Principal. Callers own the transaction (commit at the edge)."""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request
from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.accounts import invitations, security, throttle
from api.accounts.mail import AccountMail, Mailer
from api.accounts.repository import (
    ApiKeyRepository,
    InvitationRepository,
    MemberRepository,
    OrganizationRepository,
    PasswordResetRepository,
    SessionRepository,
    UserRepository,
    api_key_auth_row,
    session_auth_row,
)
from api.accounts.scopes import ROLE_RANK, effective_scopes, expand
from api.audit import write_audit
from api.billing.free_plan import ensure_free_subscription
from api.billing.limits import enforce_limit
from api.deps import Principal
from db.models.accounts import (
    ApiKey,
    Notification,
    Organization,
    OrganizationInvitation,
    OrganizationMember,
    PasswordResetToken,
    User,
    UserSession,
)
from forgeline.crypto import decrypt_str, encrypt_str
from forgeline.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from forgeline.settings import Settings

logger = logging.getLogger("forgeline.accounts")

SESSION_TTL = timedelta(days=7)
PASSWORD_RESET_TTL = timedelta(hours=1)
INVITATION_TTL = timedelta(days=7)
# API keys whose creator left the organization keep no more power than a member.
ORPHAN_KEY_ROLE = "member"


class TotpRequired(Unauthorized):
    title = "Second factor required"
    type_slug = "totp-required"


class InvalidToken(DomainError):
    status_code = 400
    title = "Invalid or expired token"
    type_slug = "invalid-token"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _settings(request: Request | None) -> Settings | None:
    return getattr(request.app.state, "settings", None) if request is not None else None


def _client_ip(request: Request | None) -> str | None:
    return request.client.host[:45] if request is not None and request.client else None


def _throttles(request: Request) -> throttle.AuthThrottles | None:
    return getattr(request.app.state, "auth_throttles", None)


def _address_key(request: Request) -> str:
    return throttle.client_address_key(_client_ip(request))


def _mailer(request: Request | None) -> Mailer | None:
    return getattr(request.app.state, "mailer", None) if request is not None else None


async def _send(request: Request | None, mail: AccountMail) -> None:
    mailer = _mailer(request)
    if mailer is None:
        logger.warning("no mailer configured; a %r e-mail was not sent", mail.subject)
        return
    await mailer.send(mail)


# ---------------------------------------------------------------- authentication


async def authenticate_bearer(session: AsyncSession, request: Request, token: str) -> Principal:
    if security.looks_like_api_key(token):
        return await _authenticate_api_key(session, request, token)
    if token.startswith(security.SESSION_TOKEN_PREFIX):
        return await _authenticate_session(session, token)
    raise Unauthorized("Unrecognised bearer token")


async def _authenticate_api_key(session: AsyncSession, request: Request, raw: str) -> Principal:
    # Format and checksum first: typos and forgeries never cost a database lookup.
    if not security.api_key_well_formed(raw):
        raise Unauthorized("Malformed API key")
    # One round trip: key row + creator's membership role + organization (see repository).
    key = await api_key_auth_row(session, raw[: security.DISPLAY_PREFIX_LENGTH])
    if key is None or not security.constant_time_equal(key["key_hash"], security.sha256_hex(raw)):
        raise Unauthorized("Invalid API key")
    if key["revoked_at"] is not None:
        raise Unauthorized("API key has been revoked")
    if key["expires_at"] is not None and key["expires_at"] <= utcnow():
        raise Unauthorized("API key has expired")
    role: str = ORPHAN_KEY_ROLE
    if key["created_by_user_id"] is not None:
        if key["creator_role"] is None:
            raise Unauthorized("API key belongs to a user who is no longer a member")
        role = key["creator_role"]
    key_id: uuid.UUID = key["id"]
    per_minute: int = key["rate_limit_per_minute"]
    retry_after = request.app.state.rate_limiter.check(key_id, per_minute)
    if retry_after is not None:
        raise RateLimited(
            f"API key rate limit of {per_minute} requests per minute exceeded",
            retry_after=retry_after,
        )
    await request.app.state.last_used.touch(key_id)
    return Principal(
        organization_id=key["organization_id"],
        user_id=None,
        api_key_id=key_id,
        role=role,
        scopes=effective_scopes(role, key["scopes"]),
    )


async def _authenticate_session(session: AsyncSession, raw: str) -> Principal:
    # One round trip: session row + user + membership role in the session's organization.
    row = await session_auth_row(session, security.sha256_hex(raw))
    if row is None or row["revoked_at"] is not None:
        raise Unauthorized("Invalid or revoked session")
    if row["expires_at"] <= utcnow():
        raise Unauthorized("Session has expired; sign in again")
    if row["organization_id"] is None:
        raise Unauthorized("Session has no organization; sign in again")
    if not row["is_active"]:
        raise Unauthorized("Invalid or revoked session")
    role: str | None = row["role"]
    if role is None:
        raise Unauthorized("No longer a member of this organization")
    return Principal(
        organization_id=row["organization_id"],
        user_id=row["user_id"],
        api_key_id=None,
        role=role,
        scopes=effective_scopes(role, None),
        session_id=row["id"],
    )


# ---------------------------------------------------------------- organizations and sign-up


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50].strip("-")
    return slug if len(slug) >= 2 else f"org-{slug}".strip("-")


async def _unique_slug(session: AsyncSession, wanted: str | None, name: str) -> str:
    orgs = OrganizationRepository(session)
    if wanted is not None:
        if await orgs.slug_taken(wanted):
            raise Conflict(f"Organization slug {wanted!r} is taken", field="organization_slug")
        return wanted
    base = slugify(name)
    slug = base
    while await orgs.slug_taken(slug):
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


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
    role: str = "owner",
) -> OrgWithOwner:
    """A new user, a new organization and the membership joining them (role: owner)."""
    email = email.strip().lower()
    if await UserRepository(session).get_by_email(email) is not None:
        raise Conflict("An account with this email already exists", field="email")
    slug = await _unique_slug(session, organization_slug, organization_name)
    org = Organization(
        id=uuid.uuid4(), name=organization_name, slug=slug, billing_email=email, settings={}
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


async def _new_session(
    session: AsyncSession,
    request: Request | None,
    user: User,
    organization_id: uuid.UUID,
    *,
    mfa_verified: bool,
) -> tuple[UserSession, str]:
    raw, token_hash = security.new_opaque_token(security.SESSION_TOKEN_PREFIX)
    row = UserSession(
        id=uuid.uuid4(),
        user_id=user.id,
        organization_id=organization_id,
        token_hash=token_hash,
        expires_at=utcnow() + SESSION_TTL,
        mfa_verified=mfa_verified,
        ip_address=_client_ip(request),
        user_agent=(request.headers.get("user-agent") if request is not None else None),
    )
    session.add(row)
    await session.flush()
    return row, raw


async def signup(
    session: AsyncSession,
    request: Request,
    *,
    email: str,
    password: str,
    name: str,
    organization_name: str,
    organization_slug: str | None,
) -> tuple[OrgWithOwner, UserSession, str]:
    throttles = _throttles(request)
    if throttles is not None:
        counts = await throttles.hit(
            (throttle.SIGNUP_PER_ADDRESS, throttle.subject_digest(_address_key(request)))
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
    user_session, raw = await _new_session(
        session, request, created.user, created.organization.id, mfa_verified=False
    )
    await write_audit(
        session,
        None,
        request,
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


# ---------------------------------------------------------------- login, refresh, logout


async def login(
    session: AsyncSession,
    request: Request,
    *,
    email: str,
    password: str,
    totp_code: str | None,
    organization_slug: str | None,
) -> tuple[UserSession, str]:
    throttles = _throttles(request)
    account = email.strip().lower()
    address = _address_key(request)
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
        ip = _client_ip(request)
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
        secret = decrypt_str(user.totp_secret_encrypted or "", _settings(request))
        if not await _accept_totp(session, user, secret, totp_code):
            raise Unauthorized("Invalid TOTP code")
    members = MemberRepository(session)
    if organization_slug is not None:
        organization_id = await members.organization_by_slug_for_user(organization_slug, user.id)
    else:
        organization_id = await members.first_organization_of(user.id)
    if organization_id is None:
        raise Forbidden("Not a member of that organization")
    if user.password_hash and security.password_needs_rehash(user.password_hash):
        user.password_hash = security.hash_password(password)
    user.last_login_at = utcnow()
    if throttles is not None:
        await throttles.clear(session, per_pair, per_account)
    row, raw = await _new_session(
        session, request, user, organization_id, mfa_verified=user.totp_enabled
    )
    await write_audit(
        session,
        None,
        request,
        "session.created",
        "session",
        row.id,
        new={"user_id": user.id, "mfa": user.totp_enabled},
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
    session: AsyncSession, request: Request, principal: Principal
) -> tuple[UserSession, str]:
    """Rotate: a new token replaces the presented one, which stops working immediately."""
    old = await _current_session(session, principal)
    user = await UserRepository(session).get(old.user_id)
    assert user is not None and old.organization_id is not None
    new, raw = await _new_session(
        session, request, user, old.organization_id, mfa_verified=old.mfa_verified
    )
    now = utcnow()
    old.revoked_at = now
    old.rotated_at = now
    old.replaced_by_id = new.id
    await write_audit(
        session, principal, request, "session.rotated", "session", old.id,
        new={"replaced_by_id": new.id},
    )  # fmt: skip
    return new, raw


async def logout(session: AsyncSession, request: Request, principal: Principal) -> None:
    row = await _current_session(session, principal)
    row.revoked_at = utcnow()
    await write_audit(session, principal, request, "session.revoked", "session", row.id)


# ---------------------------------------------------------------- password reset


async def _issue_reset_token(
    session: AsyncSession,
    request: Request | None,
    user: User,
    ttl: timedelta,
    *,
    invitation: OrganizationInvitation | None = None,
) -> tuple[str, datetime]:
    """A set-password token: the raw value goes out by mail, only its SHA-256 is stored."""
    raw, token_hash = security.new_opaque_token(security.RESET_TOKEN_PREFIX)
    expires_at = invitation.expires_at if invitation is not None else utcnow() + ttl
    session.add(
        PasswordResetToken(
            user_id=user.id,
            token_hash=token_hash,
            purpose="invitation" if invitation is not None else "password_reset",
            invitation_id=invitation.id if invitation is not None else None,
            expires_at=expires_at,
            requested_ip=_client_ip(request),
        )
    )
    await session.flush()
    return raw, expires_at


def _reset_url(request: Request | None, raw: str) -> str:
    settings = _settings(request)
    base = settings.public_base_url.rstrip("/") if settings else "http://localhost:8000"
    return f"{base}/reset-password?token={raw}"


async def request_password_reset(session: AsyncSession, request: Request, email: str) -> None:
    """Always succeeds from the caller's view, so it cannot be used to probe for accounts."""
    throttles = _throttles(request)
    if throttles is not None:
        account, address = email.strip().lower(), _address_key(request)
        counts = await throttles.hit(
            (throttle.RESET_PER_ACCOUNT_ADDRESS, throttle.subject_digest(account, address)),
            (throttle.RESET_PER_ADDRESS, throttle.subject_digest(address)),
            (throttle.RESET_PER_ACCOUNT, throttle.subject_digest(account)),
        )
        throttle.raise_if_exceeded(counts, "Too many reset requests; retry later")
    user = await UserRepository(session).get_by_email(email)
    if user is None or not user.is_active:
        return
    raw, expires_at = await _issue_reset_token(session, request, user, PASSWORD_RESET_TTL)
    await _send(
        request,
        AccountMail(
            to=user.email,
            subject="Reset your Forgeline password",
            body=f"Open {_reset_url(request, raw)} within one hour to choose a new password.\n"
            "If you did not ask for this, ignore this message.",
        ),
    )
    # The in-app notice says a link was sent; it holds no token.
    session.add(
        Notification(
            user_id=user.id,
            type="password_reset",
            title="Password reset requested",
            body="A link to choose a new password was sent to your e-mail address.",
            data={"expires_at": expires_at.isoformat()},
        )
    )
    organization_id = await MemberRepository(session).first_organization_of(user.id)
    await write_audit(
        session, None, request, "user.password_reset_requested", "user", user.id,
        organization_id=organization_id, actor_user_id=user.id, severity="notice",
    )  # fmt: skip


async def confirm_password_reset(
    session: AsyncSession, request: Request, token: str, new_password: str
) -> None:
    """Set the password, then withdraw every other outstanding link of the user and end their
    sessions. A link sent with an invitation also accepts that invitation."""
    now = utcnow()
    tokens = PasswordResetRepository(session)
    token_hash = security.sha256_hex(token)
    found = await tokens.find(token_hash)
    invalid = InvalidToken("The reset token is invalid, expired or already used")
    if found is None or not security.constant_time_equal(found.token_hash, token_hash):
        raise invalid
    # The user row lock orders concurrent confirmations of two links of one user: the second
    # finds its link withdrawn by the first (no deadlock on each other's token rows).
    user = await UserRepository(session).get_for_update(found.user_id)
    if user is None or not user.is_active or not await tokens.consume(found.id, now):
        raise invalid
    user.password_hash = security.hash_password(new_password)
    revoked = await tokens.revoke_outstanding(now, user_id=user.id)
    # Whoever knew the old password loses every session with it.
    await SessionRepository(session).revoke_all_for_user(user.id, now)
    joined: uuid.UUID | None = None
    if found.invitation_id is not None:
        invitation = await InvitationRepository(session).respond(
            found.invitation_id, now, "accepted", user_id=user.id
        )
        if invitation is not None:
            joined = (await invitations.join(session, request, invitation, now)).organization_id
    organization_id = joined or await MemberRepository(session).first_organization_of(user.id)
    await write_audit(
        session, None, request, "user.password_reset", "user", user.id,
        new={"sessions_revoked": True, "links_revoked": revoked},
        organization_id=organization_id, actor_user_id=user.id, severity="notice",
    )  # fmt: skip


# ---------------------------------------------------------------- TOTP


async def _session_user(session: AsyncSession, principal: Principal) -> User:
    assert principal.user_id is not None
    user = await UserRepository(session).get(principal.user_id)
    if user is None:
        raise Unauthorized("Invalid session")
    return user


async def _accept_totp(session: AsyncSession, user: User, secret: str, code: str) -> bool:
    """Check the code and burn its time step in one conditional UPDATE, so the same code
    cannot be replayed (not even by a concurrent request on another API process)."""
    step = security.verify_totp(secret, code)
    if step is None:
        return False
    burned = await session.execute(
        update(User)
        .where(
            User.id == user.id,
            or_(User.totp_last_step.is_(None), User.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .returning(User.id)
        .execution_options(synchronize_session=False)
    )
    if burned.first() is None:
        return False
    user.totp_last_step = step
    return True


async def _check_totp_code(
    session: AsyncSession, request: Request, user: User, secret: str, code: str
) -> None:
    """A session holder gets 10 codes per 15 minutes (shared by every API process): a stolen
    session cannot walk the million codes to switch the second factor off."""
    throttles = _throttles(request)
    key = (throttle.TOTP_PER_USER, throttle.subject_digest(str(user.id)))
    if throttles is not None:
        # End the request's read-only transaction first, so the counter's own transaction
        # never waits for a second pooled connection while this one is held.
        await session.commit()
        counts = await throttles.hit(key)
        throttle.raise_if_exceeded(counts, "Too many TOTP codes tried; retry later")
    if not await _accept_totp(session, user, secret, code):
        raise ValidationFailed("The TOTP code does not match", field="code")
    if throttles is not None:
        await throttles.clear(session, key)


async def totp_enroll(
    session: AsyncSession, request: Request, principal: Principal
) -> tuple[str, str]:
    user = await _session_user(session, principal)
    if user.totp_enabled:
        raise Conflict("TOTP is already enabled for this account")
    secret = security.new_totp_secret()
    user.totp_secret_encrypted = encrypt_str(secret, _settings(request))
    await write_audit(session, principal, request, "user.totp_enrolled", "user", user.id)
    return secret, security.totp_uri(secret, user.email)


async def totp_confirm(
    session: AsyncSession, request: Request, principal: Principal, code: str
) -> None:
    user = await _session_user(session, principal)
    if user.totp_enabled:
        raise Conflict("TOTP is already enabled for this account")
    if not user.totp_secret_encrypted:
        raise Conflict("Enroll first: POST /v1/auth/totp/enroll")
    secret = decrypt_str(user.totp_secret_encrypted, _settings(request))
    await _check_totp_code(session, request, user, secret, code)
    user.totp_enabled = True
    current = await _current_session(session, principal)
    current.mfa_verified = True
    await write_audit(
        session, principal, request, "user.totp_enabled", "user", user.id,
        old={"totp_enabled": False}, new={"totp_enabled": True}, severity="notice",
    )  # fmt: skip


async def totp_disable(
    session: AsyncSession, request: Request, principal: Principal, code: str
) -> None:
    user = await _session_user(session, principal)
    if not user.totp_enabled or not user.totp_secret_encrypted:
        raise Conflict("TOTP is not enabled for this account")
    secret = decrypt_str(user.totp_secret_encrypted, _settings(request))
    await _check_totp_code(session, request, user, secret, code)
    user.totp_enabled = False
    user.totp_secret_encrypted = None
    await write_audit(
        session, principal, request, "user.totp_disabled", "user", user.id,
        old={"totp_enabled": True}, new={"totp_enabled": False}, severity="warning",
    )  # fmt: skip


# ---------------------------------------------------------------- organization


async def current_organization(session: AsyncSession, principal: Principal) -> Organization:
    org = await OrganizationRepository(session).get(principal.organization_id)
    if org is None:
        raise NotFound("Organization not found")
    return org


async def update_organization(
    session: AsyncSession, request: Request, principal: Principal, changes: dict[str, Any]
) -> Organization:
    org = await current_organization(session, principal)
    old = {key: getattr(org, key) for key in changes}
    for key, value in changes.items():
        setattr(org, key, value)
    if changes:
        await write_audit(
            session, principal, request, "organization.updated", "organization", org.id,
            old=old, new=changes,
        )  # fmt: skip
    return org


# ---------------------------------------------------------------- members


def _check_role_change_allowed(principal: Principal, *roles: str) -> None:
    """Only owners grant or take away ownership; nobody grants more than they hold."""
    for role in roles:
        if role == "owner" and principal.role != "owner":
            raise Forbidden("Only an owner can grant or change the owner role")
        if ROLE_RANK[role] > ROLE_RANK.get(principal.role, -1):
            raise Forbidden("Cannot grant a role above your own")


async def _ensure_not_last_owner(session: AsyncSession, member: OrganizationMember) -> None:
    owners = await MemberRepository(session).lock_owners(member.organization_id)
    if member.role == "owner" and owners == [member.id]:
        raise Conflict("An organization must keep at least one owner")


async def invite_member(
    session: AsyncSession,
    request: Request,
    principal: Principal,
    *,
    email: str,
    role: str,
    invite_name: str | None = None,
    create_account: bool = False,
) -> tuple[OrganizationInvitation, User]:
    """Offer membership; it exists only once the invited user accepts (see invitations.py).

    An unknown e-mail (with `create_account`) gets an account without a password; it and any
    existing account that never set one receive a set-password link that also accepts.
    """
    _check_role_change_allowed(principal, role)
    # Before any write: an invitation over the plan's member limit creates no user either.
    await enforce_limit(session, principal.organization_id, "team_members")
    users = UserRepository(session)
    user = await users.get_by_email(email)
    if user is None:
        if not create_account:
            raise NotFound("No user with that email; send an invitation instead")
        user = User(
            id=uuid.uuid4(),
            email=email,
            name=invite_name or email.split("@", 1)[0],
            password_hash=None,
        )
        session.add(user)
        try:
            await session.flush()
        except IntegrityError as exc:  # the same e-mail signed up or was invited concurrently
            raise Conflict("That e-mail was registered concurrently; retry") from exc
    if await MemberRepository(session).get_by_user(principal.organization_id, user.id):
        raise Conflict("That user is already a member of this organization")
    now = utcnow()
    invitations_repo = InvitationRepository(session)
    await invitations_repo.expire_stale(principal.organization_id, user.id, now)
    if await invitations_repo.pending_for(principal.organization_id, user.id, now):
        raise Conflict("That user already has a pending invitation to this organization")
    invitation = OrganizationInvitation(
        id=uuid.uuid4(),
        organization_id=principal.organization_id,
        user_id=user.id,
        role=role,
        invited_by_user_id=principal.user_id,
        expires_at=now + INVITATION_TTL,
        created_at=now,
    )
    session.add(invitation)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent invitation of the same person
        raise Conflict("That user already has a pending invitation to this organization") from exc
    org = await current_organization(session, principal)
    # Without a password, or without any organization to sign in to, the person could not
    # accept through the API: their mail carries a set-password link that also accepts.
    needs_link = user.password_hash is None or (
        await MemberRepository(session).first_organization_of(user.id) is None
    )
    if needs_link:
        raw, _ = await _issue_reset_token(
            session, request, user, INVITATION_TTL, invitation=invitation
        )
        action = f"Set your password at {_reset_url(request, raw)} to join"
    else:
        action = "Sign in and accept it (POST /v1/me/invitations/{id}/accept) to join".replace(
            "{id}", str(invitation.id)
        )
    await _send(
        request,
        AccountMail(
            to=user.email,
            subject=f"You are invited to {org.name} on Forgeline",
            body=f"You were invited to {org.name} as {role}. {action}; the invitation expires "
            f"on {invitation.expires_at:%Y-%m-%d %H:%M} UTC.",
        ),
    )
    session.add(
        Notification(
            user_id=user.id,
            organization_id=org.id,
            type="organization_invitation",
            title=f"You are invited to {org.name}",
            body=f"Invited as {role}; accept or decline the invitation.",
            data={
                "organization_id": str(org.id),
                "invitation_id": str(invitation.id),
                "role": role,
                "expires_at": invitation.expires_at.isoformat(),
            },
        )
    )
    await write_audit(
        session, principal, request, "member.invited", "organization_invitation", invitation.id,
        new={"user_id": user.id, "email": user.email, "role": role},
    )  # fmt: skip
    return invitation, user


async def list_invitations(
    session: AsyncSession, principal: Principal
) -> list[tuple[OrganizationInvitation, User]]:
    return await InvitationRepository(session).live_for_organization(
        principal.organization_id, utcnow()
    )


async def revoke_invitation(
    session: AsyncSession, request: Request, principal: Principal, invitation_id: uuid.UUID
) -> None:
    now = utcnow()
    invitation = await InvitationRepository(session).respond(
        invitation_id, now, "revoked", organization_id=principal.organization_id
    )
    if invitation is None:
        raise NotFound("No pending invitation with that ID")
    await PasswordResetRepository(session).revoke_outstanding(now, invitation_id=invitation.id)
    await write_audit(
        session, principal, request, "member.invitation_revoked", "organization_invitation",
        invitation.id, old={"user_id": invitation.user_id, "role": invitation.role},
    )  # fmt: skip


async def change_member_role(
    session: AsyncSession, request: Request, principal: Principal, member_id: uuid.UUID, role: str
) -> tuple[OrganizationMember, User]:
    members = MemberRepository(session)
    member = await members.get(principal.organization_id, member_id)
    if member is None:
        raise NotFound("Member not found")
    user = await UserRepository(session).get(member.user_id)
    assert user is not None
    if member.role == role:
        return member, user
    _check_role_change_allowed(principal, member.role, role)
    if role != "owner":
        await _ensure_not_last_owner(session, member)
    old_role = member.role
    member.role = role
    await write_audit(
        session, principal, request, "member.role_changed", "organization_member", member.id,
        old={"role": old_role}, new={"role": role},
    )  # fmt: skip
    return member, user


async def remove_member(
    session: AsyncSession, request: Request, principal: Principal, member_id: uuid.UUID
) -> None:
    members = MemberRepository(session)
    member = await members.get(principal.organization_id, member_id)
    if member is None:
        raise NotFound("Member not found")
    _check_role_change_allowed(principal, member.role)
    await _ensure_not_last_owner(session, member)
    now = utcnow()
    # Their sessions in this organization end now; their API keys stop resolving (see
    # _authenticate_api_key), without being deleted, so the audit trail keeps its references.
    await session.execute(
        update(UserSession)
        .where(
            UserSession.user_id == member.user_id,
            UserSession.organization_id == member.organization_id,
            UserSession.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    await session.delete(member)
    await write_audit(
        session, principal, request, "member.removed", "organization_member", member.id,
        old={"user_id": member.user_id, "role": member.role},
    )  # fmt: skip


# ---------------------------------------------------------------- API keys


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
    request: Request,
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
        session, principal, request, "api_key.created", "api_key", key.id,
        new={"name": name, "key_prefix": key.key_prefix, "scopes": key.scopes,
             "expires_at": expires_at, "rate_limit_per_minute": rate_limit_per_minute},
    )  # fmt: skip
    return key, raw


async def revoke_api_key(
    session: AsyncSession, request: Request, principal: Principal, key_id: uuid.UUID
) -> None:
    key = await ApiKeyRepository(session).get(principal.organization_id, key_id)
    if key is None:
        raise NotFound("API key not found")
    if key.revoked_at is not None:
        return
    key.revoked_at = utcnow()
    await write_audit(
        session, principal, request, "api_key.revoked", "api_key", key.id,
        old={"revoked_at": None}, new={"revoked_at": key.revoked_at}, severity="notice",
    )  # fmt: skip
