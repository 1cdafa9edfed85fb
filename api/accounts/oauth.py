"""/v1/auth/oauth routes: sign in with GitHub or GitLab (authorization code + PKCE + state),
and linking a forge account to the signed-in user. The start (and link) response gives the
calling browser the request's binding cookie; the callback completes only with it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, StringConstraints

from api.accounts import render
from api.accounts.schemas import RequestModel, SessionOut, TotpCode
from api.console.auth import secure_cookies, set_session_cookie
from api.console.pages import error_page
from api.deps import AccountContextDep, SessionDep, SessionPrincipalDep, SettingsDep
from core.accounts import oauth
from forgeline.errors import DomainError

router = APIRouter(tags=["auth"])
Provider = Literal["github", "gitlab"]
# Set by a browser sign-in started from the console's buttons.
CONSOLE_MARKER = "forgeline_oauth_console"
# Holds the binding secret of the browser's pending request. Scoped to the callback path, so
# `__Host-` (which requires Path=/) does not apply; `__Secure-` does behind https.
BINDING_COOKIE = "forgeline_oauth_binding"


def callback_path(provider: str) -> str:
    return f"/v1/auth/oauth/{provider}/callback"


def binding_cookie_name(request: Request) -> str:
    return f"__Secure-{BINDING_COOKIE}" if secure_cookies(request) else BINDING_COOKIE


def set_binding_cookie(
    request: Request, response: Response, provider: str, started: oauth.AuthorizationRequest
) -> None:
    """The secret only the starting browser holds; one pending request per browser and forge
    (a newer start replaces it)."""
    response.set_cookie(
        binding_cookie_name(request),
        started.binding,
        max_age=int(oauth.STATE_TTL.total_seconds()),
        path=callback_path(provider),
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
    )


def clear_binding_cookie(request: Request, response: Response, provider: str) -> None:
    response.delete_cookie(
        binding_cookie_name(request),
        path=callback_path(provider),
        httponly=True,
        secure=secure_cookies(request),
        samesite="lax",
    )


def _browser(request: Request) -> bool:
    """A browser that navigated here (the console's buttons, or a page's link)."""
    return bool(request.cookies.get(CONSOLE_MARKER)) or "text/html" in request.headers.get(
        "accept", ""
    )


class AuthorizationOut(BaseModel):
    """Send the browser here; the forge comes back to the callback, which completes only in the
    client that received this answer (it carries the request's binding cookie, set on the
    callback path): a browser calling this API, or a script that keeps the cookie and requests
    the callback URL itself."""

    authorization_url: str


class LinkRequest(RequestModel):
    """The account's proof, given again with each link request."""

    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    totp_code: TotpCode | None = None


class OAuthSessionOut(SessionOut):
    created: bool
    linked: bool


class ProvidersOut(BaseModel):
    providers: list[str]


@router.get("/auth/oauth/providers")
async def providers(settings: SettingsDep) -> ProvidersOut:
    """The forges configured for sign-in."""
    return ProvidersOut(providers=oauth.configured_providers(settings))


@router.get("/auth/oauth/{provider}/start", response_model=None, responses={404: {}})
async def start(
    provider: Provider,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    organization: Annotated[str | None, Query(max_length=100)] = None,
    redirect: bool = False,
) -> AuthorizationOut | RedirectResponse:
    """A sign-in request: the forge's authorization URL (or a redirect to it), and the binding
    cookie the callback requires from this client."""
    started = await oauth.start(session, settings, provider, organization_slug=organization)
    await session.commit()
    if redirect:
        # A browser (the console's buttons): the callback signs the console in.
        response = RedirectResponse(started.url, status_code=302)
        set_binding_cookie(request, response, provider, started)
        response.set_cookie(
            CONSOLE_MARKER,
            "1",
            max_age=600,
            path="/v1/auth/oauth",
            httponly=True,
            samesite="lax",
            secure=secure_cookies(request),
        )
        return response
    set_binding_cookie(request, response, provider, started)
    return AuthorizationOut(authorization_url=started.url)


@router.post(
    "/auth/oauth/{provider}/link",
    responses={403: {"description": "Password or TOTP code missing or refused"}, 404: {}, 429: {}},
)
async def link(
    provider: Provider,
    body: LinkRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    ctx: AccountContextDep,
    principal: SessionPrincipalDep,
) -> AuthorizationOut:
    """Link a forge account to the signed-in user, who confirms the account with its password
    (and TOTP code when enabled); the callback then links instead of signing in, in the
    client that received this answer's binding cookie."""
    started = await oauth.start_link(
        session, ctx, provider, principal, password=body.password, totp_code=body.totp_code
    )
    await session.commit()
    set_binding_cookie(request, response, provider, started)
    return AuthorizationOut(authorization_url=started.url)


@router.get(
    "/auth/oauth/{provider}/callback",
    response_model=None,
    responses={
        400: {"description": "State, code or verifier refused"},
        403: {"description": "The request was started in another browser (no binding cookie)"},
        409: {},
    },
)
async def callback(
    provider: Provider,
    request: Request,
    response: Response,
    session: SessionDep,
    ctx: AccountContextDep,
    # Bounded, but loosely: a code too long is refused by the callback after it has spent the
    # request (a 422 here would leave the state usable for a replay).
    code: Annotated[str, Query(max_length=4096)] = "",
    state: Annotated[str, Query(max_length=200)] = "",
    error: Annotated[str, Query(max_length=4096)] = "",
) -> OAuthSessionOut | RedirectResponse | HTMLResponse:
    """The forge's redirect: signs in (or links) and returns a session (to the console, as its
    cookie, when the console started the sign-in). Only the client holding the request's
    binding cookie completes it; any other is refused and nothing is written. Any other
    outcome spends the request: the forge's refusal (`error`), a bad or refused code."""
    binding = request.cookies.get(binding_cookie_name(request))
    try:
        signed = await oauth.callback(
            session, ctx, provider, code=code, state=state, binding=binding, error=error or None
        )
        await session.commit()
    except DomainError as exc:
        if not _browser(request):
            raise
        await session.rollback()
        return error_page(request, None, exc)
    if request.cookies.get(CONSOLE_MARKER):
        redirect = RedirectResponse("/projects", status_code=303)
        set_session_cookie(request, redirect, signed.token)
        redirect.delete_cookie(CONSOLE_MARKER, path="/v1/auth/oauth")
        clear_binding_cookie(request, redirect, provider)
        return redirect
    clear_binding_cookie(request, response, provider)
    out = render.session_out(signed.session, signed.token)
    return OAuthSessionOut(**out.model_dump(), created=signed.created, linked=signed.linked)
