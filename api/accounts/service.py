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

from api.accounts import security
from api.accounts.repository import (
    ApiKeyRepository,
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
LOGIN_ATTEMPTS_PER_MINUTE = 10
RESET_REQUESTS_PER_MINUTE = 3


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


def _throttle(request: Request, bucket: str, email: str, per_minute: int) -> None:
    """Per-email attempt limit (per process, like the API key limit): slows password guessing
    and reset-notification spam without revealing whether the account exists."""
    limiter = getattr(request.app.state, "login_limiter", None)
    if limiter is None:
        return
    retry_after = limiter.check(f"{bucket}:{email.strip().lower()}", per_minute)
    if retry_after is not None:
        raise RateLimited(
            "Too many attempts for this account; retry later", retry_after=retry_after
        )


def _client_ip(request: Request | None) -> str | None:
    return request.client.host[:45] if request is not None and request.client else None


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
    _throttle(request, "login", email, LOGIN_ATTEMPTS_PER_MINUTE)
    user = await UserRepository(session).get_by_email(email)
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
    session: AsyncSession, request: Request | None, user: User, ttl: timedelta
) -> tuple[str, datetime]:
    raw, token_hash = security.new_opaque_token(security.RESET_TOKEN_PREFIX)
    expires_at = utcnow() + ttl
    session.add(
        PasswordResetToken(
            user_id=user.id,
            token_hash=token_hash,
            expires_at=expires_at,
            requested_ip=_client_ip(request),
        )
    )
    return raw, expires_at


def _reset_url(request: Request | None, raw: str) -> str:
    settings = _settings(request)
    base = settings.public_base_url.rstrip("/") if settings else "http://localhost:8000"
    return f"{base}/reset-password?token={raw}"


async def request_password_reset(session: AsyncSession, request: Request, email: str) -> None:
    """Always succeeds from the caller's view, so it cannot be used to probe for accounts."""
    _throttle(request, "reset", email, RESET_REQUESTS_PER_MINUTE)
    user = await UserRepository(session).get_by_email(email)
    if user is None or not user.is_active:
        return
    raw, expires_at = await _issue_reset_token(session, request, user, PASSWORD_RESET_TTL)
    url = _reset_url(request, raw)
    # No mail server: the notification row is the delivery channel (the user's inbox in-app).
    session.add(
        Notification(
            user_id=user.id,
            type="password_reset",
            title="Reset your Forgeline password",
            body=f"Open {url} within one hour to choose a new password.",
            data={"reset_url": url, "expires_at": expires_at.isoformat()},
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
    now = utcnow()
    user_id = await PasswordResetRepository(session).consume(security.sha256_hex(token), now)
    if user_id is None:
        raise InvalidToken("The reset token is invalid, expired or already used")
    user = await UserRepository(session).get(user_id)
    if user is None or not user.is_active:
        raise InvalidToken("The reset token is invalid, expired or already used")
    user.password_hash = security.hash_password(new_password)
    # Whoever knew the old password loses every session with it.
    await SessionRepository(session).revoke_all_for_user(user.id, now)
    organization_id = await MemberRepository(session).first_organization_of(user.id)
    await write_audit(
        session, None, request, "user.password_reset", "user", user.id,
        new={"sessions_revoked": True},
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
    if not await _accept_totp(session, user, secret, code):
        raise ValidationFailed("The TOTP code does not match", field="code")
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
    if not await _accept_totp(session, user, secret, code):
        raise ValidationFailed("The TOTP code does not match", field="code")
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


async def add_member(
    session: AsyncSession,
    request: Request,
    principal: Principal,
    *,
    email: str,
    role: str,
    invite_name: str | None = None,
    invite: bool = False,
) -> tuple[OrganizationMember, User]:
    _check_role_change_allowed(principal, role)
    # Before any write: an invitation over the plan's member limit creates no user either.
    await enforce_limit(session, principal.organization_id, "team_members")
    users = UserRepository(session)
    user = await users.get_by_email(email)
    invited = False
    if user is None:
        if not invite:
            raise NotFound("No user with that email; send an invitation instead")
        user = User(
            id=uuid.uuid4(),
            email=email,
            name=invite_name or email.split("@", 1)[0],
            password_hash=None,
        )
        session.add(user)
        await session.flush()
        invited = True
    if await MemberRepository(session).get_by_user(principal.organization_id, user.id):
        raise Conflict("That user is already a member of this organization")
    member = OrganizationMember(
        id=uuid.uuid4(),
        organization_id=principal.organization_id,
        user_id=user.id,
        role=role,
        invited_by_user_id=principal.user_id,
    )
    session.add(member)
    org = await current_organization(session, principal)
    if invited:
        raw, _ = await _issue_reset_token(session, request, user, INVITATION_TTL)
        url = _reset_url(request, raw)
        body = f"You were invited to {org.name}. Set your password at {url} within 7 days."
        data: dict[str, Any] = {"organization_id": str(org.id), "set_password_url": url}
    else:
        body = f"You were added to {org.name} as {role}."
        data = {"organization_id": str(org.id)}
    session.add(
        Notification(
            user_id=user.id,
            organization_id=org.id,
            type="organization_invitation" if invited else "organization_membership",
            title=f"You have joined {org.name}",
            body=body,
            data=data,
        )
    )
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("That user is already a member of this organization") from exc
    await write_audit(
        session, principal, request, "member.invited" if invited else "member.added",
        "organization_member", member.id,
        new={"user_id": user.id, "email": user.email, "role": role},
    )  # fmt: skip
    return member, user


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
