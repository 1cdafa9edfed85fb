"""Sign in with GitHub and GitLab: an authorization request (random state and PKCE verifier,
stored hashed / encrypted and used once), then its callback: the forge account signs in the
user it is linked to, is linked to the signed-in user who started the request, or becomes a
new user. An existing account is never taken over by an e-mail address the forge reports:
its owner signs in first and links the forge account, giving the account's password (and TOTP
code, when enabled) again with the link request: a session alone never links (a stolen or
forgotten one cannot attach the thief's forge account). The proof is checked and counted as a
login is, and the request it opens lives ten minutes, so a link completes at most ten minutes
after its proof. Each request is bound to the browser that started it (RFC 6749 10.12): a random
binding secret goes to that browser as a cookie and its hash is stored with the state, so a
victim's browser sent to an attacker's authorization URL cannot finish the attacker's sign-in
or link."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.accounts import sessions
from core.accounts.context import AccountContext, utcnow
from core.accounts.errors import ReauthenticationFailed, ReauthenticationRequired, TotpRequired
from core.accounts.organizations import create_organization_with_owner
from core.accounts.repository import UserRepository
from core.audit.service import write_audit
from core.principal import Principal
from db.models.accounts import User, UserSession
from db.models.oauth import OAuthState
from db.models.projects import GitProviderConnection
from forgeline.crypto import decrypt_str, encrypt_str
from forgeline.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from forgeline.settings import Settings
from infra.forges import ForgeRejected, ForgeUnavailable
from infra.oauth import (
    ForgeIdentity,
    OAuthProvider,
    authorization_url,
    exchange_code,
    github_provider,
    gitlab_provider,
)

STATE_TTL = timedelta(minutes=10)
# Authorization codes are short (GitHub: 20 characters); a longer one is refused, after the
# request it names is spent.
MAX_CODE_CHARS = 500


class OAuthStateInvalid(
    DomainError, status=400, title="Sign-in request invalid", slug="oauth-state-invalid"
): ...


class OAuthBrowserMismatch(
    DomainError,
    status=403,
    title="Sign-in started in another browser",
    slug="oauth-browser-mismatch",
): ...


class ForgeSignInFailed(
    DomainError, status=400, title="The forge refused the sign-in", slug="oauth-refused"
): ...


class ForgeSignInUnavailable(
    DomainError, status=502, title="The forge did not answer", slug="oauth-forge-unreachable"
): ...


@dataclass(frozen=True)
class AuthorizationRequest:
    """Where to send the browser, and the binding secret that browser must hold as a cookie."""

    url: str
    binding: str


@dataclass(frozen=True)
class SignedIn:
    session: UserSession
    token: str
    user: User
    created: bool
    linked: bool


def provider(settings: Settings, name: str) -> OAuthProvider:
    """The configured provider called `name`; an unknown or unconfigured one is a 404."""
    if name == "github" and settings.github_oauth_client_id and settings.github_oauth_client_secret:
        return github_provider(
            settings.github_web_url,
            settings.github_api_url,
            settings.github_oauth_client_id,
            settings.github_oauth_client_secret.get_secret_value(),
        )
    if name == "gitlab" and settings.gitlab_oauth_client_id and settings.gitlab_oauth_client_secret:
        return gitlab_provider(
            settings.gitlab_web_url,
            settings.gitlab_api_url,
            settings.gitlab_oauth_client_id,
            settings.gitlab_oauth_client_secret.get_secret_value(),
        )
    raise NotFound(f"sign-in with {name[:20]!r} is not configured")


def configured_providers(settings: Settings) -> list[str]:
    names = []
    for name in ("github", "gitlab"):
        try:
            provider(settings, name)
        except NotFound:
            continue
        names.append(name)
    return names


def redirect_uri(settings: Settings, name: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}/v1/auth/oauth/{name}/callback"


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


async def start(
    session: AsyncSession,
    settings: Settings,
    name: str,
    *,
    link_user_id: uuid.UUID | None = None,
    organization_slug: str | None = None,
) -> AuthorizationRequest:
    """A new authorization request: the forge's URL to send the browser to, and the secret
    that browser must present (as a cookie) when the forge sends it back."""
    chosen = provider(settings, name)
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)
    binding = secrets.token_urlsafe(32)
    # Requests abandoned on the forge are never called back: each start drops a few.
    expired = select(OAuthState.state_hash).where(OAuthState.expires_at < utcnow()).limit(20)
    await session.execute(
        delete(OAuthState)
        .where(OAuthState.state_hash.in_(expired))
        .execution_options(synchronize_session=False)
    )
    session.add(
        OAuthState(
            state_hash=_digest(state),
            provider=chosen.name,
            code_verifier_encrypted=encrypt_str(verifier, settings),
            binding_hash=_digest(binding),
            link_user_id=link_user_id,
            organization_slug=organization_slug,
            expires_at=utcnow() + STATE_TTL,
        )
    )
    await session.flush()
    url = authorization_url(chosen, redirect_uri(settings, chosen.name), state, verifier)
    return AuthorizationRequest(url, binding)


async def start_link(
    session: AsyncSession,
    ctx: AccountContext,
    name: str,
    principal: Principal,
    *,
    password: str,
    totp_code: str | None,
) -> AuthorizationRequest:
    """A link request for the signed-in user, opened only once the account is proven again:
    its password and, when enabled, a TOTP code, counted by the login throttles."""
    settings = ctx.settings
    assert settings is not None and principal.user_id is not None
    provider(settings, name)  # an unconfigured forge is a 404 before anything is counted
    user = await session.get(User, principal.user_id)
    if user is None:
        raise Unauthorized("Invalid or revoked session")
    if user.password_hash is None:
        raise ReauthenticationRequired(
            "This account has no password to confirm it with: set one (password reset), "
            "then link the forge account"
        )
    email = user.email
    # The counters take their own connection: end the request's read first (see totp).
    await session.commit()
    try:
        proof = await sessions.check_credentials(
            session, ctx, email=email, password=password, totp_code=totp_code
        )
    except TotpRequired as exc:
        raise ReauthenticationRequired(
            "This account requires a TOTP code (totp_code) with its password"
        ) from exc
    except Unauthorized as exc:
        raise ReauthenticationFailed(
            "The password or TOTP code does not match", field="password"
        ) from exc
    if proof.user.id != principal.user_id:  # the e-mail changed hands meanwhile
        raise ReauthenticationFailed("The password or TOTP code does not match")
    await sessions.clear_counters(session, ctx, proof)
    await write_audit(
        session, principal, ctx.origin, "user.reauthenticated", "user", proof.user.id,
        new={"purpose": f"link {name}"},
    )  # fmt: skip
    return await start(session, settings, name, link_user_id=proof.user.id)


async def _consume(session: AsyncSession, name: str, state: str, binding: str | None) -> OAuthState:
    """The request `state` names, if the browser presents its binding secret; deleted and
    committed before the code is exchanged, so a second callback with the same state (a
    replay, a concurrent duplicate) finds nothing. A callback from another browser changes
    nothing: the request stays for the browser that started it."""
    if not state or len(state) > 200:
        raise OAuthStateInvalid("the state does not match a sign-in request")
    key = _digest(state)
    row = await session.scalar(
        select(OAuthState).where(OAuthState.state_hash == key, OAuthState.provider == name)
    )
    if row is None:
        raise OAuthStateInvalid("the state does not match a sign-in request (or it was used)")
    if row.expires_at < utcnow():
        raise OAuthStateInvalid("the sign-in request expired: start it again")
    presented = _digest(binding) if binding and len(binding) <= 200 else ""
    if not hmac.compare_digest(presented, row.binding_hash):
        raise OAuthBrowserMismatch(
            "This sign-in was not started in this browser (or its cookie is gone): "
            "start it again from here"
        )
    consumed = (
        await session.execute(
            delete(OAuthState)
            .where(OAuthState.state_hash == key, OAuthState.provider == name)
            .returning(OAuthState.state_hash)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    await session.commit()
    if consumed is None:  # a concurrent callback with the same state consumed it first
        raise OAuthStateInvalid("the state does not match a sign-in request (or it was used)")
    return row


def _printable(value: str) -> str:
    """A forge's error code as it may be echoed back: at most 100 plain characters."""
    return "".join(ch for ch in value[:100] if ch.isprintable() and ch not in "<>&\"'")


async def _linked_user(session: AsyncSession, identity: ForgeIdentity) -> User | None:
    return await session.scalar(
        select(User)
        .join(GitProviderConnection, GitProviderConnection.user_id == User.id)
        .where(
            GitProviderConnection.provider == identity.provider,
            GitProviderConnection.external_account_id == identity.account_id,
            GitProviderConnection.organization_id.is_(None),
            GitProviderConnection.installation_id.is_(None),
        )
    )


async def _link(
    session: AsyncSession, settings: Settings, user: User, identity: ForgeIdentity
) -> None:
    await session.execute(
        insert(GitProviderConnection)
        .values(
            id=uuid.uuid4(),
            user_id=user.id,
            provider=identity.provider,
            external_account_id=identity.account_id,
            external_username=identity.username,
            access_token_encrypted=encrypt_str(identity.access_token, settings),
        )
        .on_conflict_do_nothing()
    )
    linked = await _linked_user(session, identity)
    if linked is not None and linked.id != user.id:
        # A concurrent link of the same forge account to another user committed first.
        raise Conflict(f"this {identity.provider} account is linked to another account")
    if linked is None:
        raise Conflict(f"this account already has another {identity.provider} account linked")


async def _new_user(session: AsyncSession, settings: Settings, identity: ForgeIdentity) -> User:
    email = identity.email or (
        f"{identity.account_id}+{identity.username}@users.noreply.{identity.provider}.invalid"
    )
    if await UserRepository(session).get_by_email(email) is not None:
        # Never a link by e-mail: whoever controls the forge account may not own the address.
        raise Conflict(
            "An account with this e-mail already exists: sign in to it, then link "
            f"{identity.provider} from your account"
        )
    created = await create_organization_with_owner(
        session,
        organization_name=f"{identity.username}'s organization",
        organization_slug=None,
        email=email,
        name=identity.name or identity.username,
        password_hash=None,
    )
    await _link(session, settings, created.user, identity)
    return created.user


async def callback(
    session: AsyncSession,
    ctx: AccountContext,
    name: str,
    *,
    code: str,
    state: str,
    binding: str | None,
    error: str | None = None,
) -> SignedIn:
    """The forge's redirect, from the browser holding the request's `binding` secret. The
    request is spent (committed) before anything else is looked at, whatever follows: the
    forge's own refusal (`error`), a missing, malformed or refused code all end it, so its
    state can never be replayed."""
    settings = ctx.settings
    assert settings is not None
    chosen = provider(settings, name)
    request = await _consume(session, chosen.name, state, binding)
    if error:
        raise ForgeSignInFailed(f"the forge refused the sign-in: {_printable(error)}")
    if not code or len(code) > MAX_CODE_CHARS:
        raise ValidationFailed("the callback carries no code")
    verifier = decrypt_str(request.code_verifier_encrypted, settings)
    try:
        identity = await exchange_code(chosen, redirect_uri(settings, chosen.name), code, verifier)
    except ForgeRejected as exc:
        raise ForgeSignInFailed(str(exc)) from exc
    except ForgeUnavailable as exc:
        raise ForgeSignInUnavailable(str(exc)) from exc
    created = linked = False
    try:
        user = await _linked_user(session, identity)
        if request.link_user_id is not None:
            if user is not None and user.id != request.link_user_id:
                raise Conflict(f"this {chosen.name} account is linked to another account")
            if user is None:
                user = await session.get(User, request.link_user_id)
                if user is None:
                    raise OAuthStateInvalid("the account that asked for the link is gone")
                await _link(session, settings, user, identity)
                linked = True
        elif user is None:
            user = await _new_user(session, settings, identity)
            created = True
    except IntegrityError as exc:  # a concurrent first sign-in of the same forge account
        raise Conflict("this forge account signed in concurrently; retry") from exc
    if not user.is_active:
        raise Forbidden("the account is disabled")
    row, raw = await sessions.sign_in(
        session,
        ctx,
        user,
        request.organization_slug,
        method=chosen.name,
        mfa_verified=False,
        audit={"via": chosen.name, "created": created, "linked": linked},
    )
    return SignedIn(row, raw, user, created, linked)
