"""Console sign-in state: the session token in an HttpOnly cookie, and CSRF tokens.

Signed-in forms carry a synchronizer token derived from the session token (which only the
browser's HttpOnly cookie holds); the sign-in form, before any session, uses a double-submit
cookie. Every state-changing console request checks one of them."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from fastapi import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from core.accounts import security
from core.accounts.authentication import authenticate_bearer
from core.accounts.memberships import Membership, organizations_of
from core.principal import Principal
from forgeline.errors import Unauthorized

SESSION_COOKIE = "fl_console_session"
LOGIN_CSRF_COOKIE = "fl_console_csrf"
_MAX_TOKEN_CHARS = 200


class SignInRequired(Exception):
    """The request has no valid console session: answered with a redirect to /login."""


class CsrfRejected(Exception):
    """A state-changing form without a matching CSRF token."""


@dataclass(frozen=True)
class ConsoleUser:
    principal: Principal
    token: str
    organizations: tuple[Membership, ...] = field(default=())

    @property
    def csrf(self) -> str:
        return session_csrf(self.token)


def session_csrf(token: str) -> str:
    return hashlib.sha256(b"forgeline-console-csrf:" + token.encode()).hexdigest()


def secure_cookies(request: Request) -> bool:
    base: str = request.app.state.settings.public_base_url
    return request.url.scheme == "https" or base.startswith("https://")


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        secure=secure_cookies(request),
        samesite="lax",
        path="/",
        max_age=7 * 24 * 3600,
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, secure=secure_cookies(request), samesite="lax"
    )


def login_csrf(request: Request) -> str:
    """The double-submit token of the sign-in form (reused while the cookie lasts)."""
    existing = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if 32 <= len(existing) <= 64 and existing.isalnum():
        return existing
    return secrets.token_hex(16)


def set_login_csrf_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        secure=secure_cookies(request),
        samesite="strict",
        path="/login",
        max_age=3600,
    )


def check_login_csrf(request: Request, submitted: str) -> None:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), submitted.encode()):
        raise CsrfRejected()


def check_csrf(user: ConsoleUser, submitted: str) -> None:
    if not hmac.compare_digest(user.csrf.encode(), submitted.encode()):
        raise CsrfRejected()


async def console_user(request: Request, session: AsyncSession) -> ConsoleUser:
    """The signed-in user of the console cookie; API keys are never accepted from a cookie."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if (
        not token
        or len(token) > _MAX_TOKEN_CHARS
        or not token.startswith(security.SESSION_TOKEN_PREFIX)
    ):
        raise SignInRequired()
    try:
        principal = await authenticate_bearer(
            session,
            token,
            rate_limiter=request.app.state.rate_limiter,
            last_used=request.app.state.last_used,
        )
    except Unauthorized as exc:
        raise SignInRequired() from exc
    request.state.principal = principal
    memberships: tuple[Membership, ...] = ()
    if principal.user_id is not None:
        memberships = tuple(await organizations_of(session, principal.user_id))
    return ConsoleUser(principal=principal, token=token, organizations=memberships)
