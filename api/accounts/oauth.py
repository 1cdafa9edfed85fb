"""/v1/auth/oauth routes: sign in with GitHub or GitLab (authorization code + PKCE + state),
and linking a forge account to the signed-in user."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, StringConstraints

from api.accounts import render
from api.accounts.schemas import RequestModel, SessionOut, TotpCode
from api.console.auth import secure_cookies, set_session_cookie
from api.deps import AccountContextDep, SessionDep, SessionPrincipalDep, SettingsDep
from core.accounts import oauth

router = APIRouter(tags=["auth"])
Provider = Literal["github", "gitlab"]
# Set by a browser sign-in started from the console's buttons.
CONSOLE_MARKER = "forgeline_oauth_console"


class AuthorizationOut(BaseModel):
    """Send the browser here; the forge comes back to the callback."""

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
    session: SessionDep,
    settings: SettingsDep,
    organization: Annotated[str | None, Query(max_length=100)] = None,
    redirect: bool = False,
) -> AuthorizationOut | RedirectResponse:
    """A sign-in request: the forge's authorization URL (or a redirect to it)."""
    url = await oauth.start(session, settings, provider, organization_slug=organization)
    await session.commit()
    if redirect:
        # A browser (the console's buttons): the callback signs the console in.
        response = RedirectResponse(url, status_code=302)
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
    return AuthorizationOut(authorization_url=url)


@router.post(
    "/auth/oauth/{provider}/link",
    responses={403: {"description": "Password or TOTP code missing or refused"}, 404: {}, 429: {}},
)
async def link(
    provider: Provider,
    body: LinkRequest,
    session: SessionDep,
    ctx: AccountContextDep,
    principal: SessionPrincipalDep,
) -> AuthorizationOut:
    """Link a forge account to the signed-in user, who confirms the account with its password
    (and TOTP code when enabled); the callback then links instead of signing in."""
    url = await oauth.start_link(
        session, ctx, provider, principal, password=body.password, totp_code=body.totp_code
    )
    await session.commit()
    return AuthorizationOut(authorization_url=url)


@router.get(
    "/auth/oauth/{provider}/callback",
    response_model=None,
    responses={400: {"description": "State, code or verifier refused"}, 409: {}},
)
async def callback(
    provider: Provider,
    request: Request,
    session: SessionDep,
    ctx: AccountContextDep,
    code: Annotated[str, Query(max_length=500)] = "",
    state: Annotated[str, Query(max_length=200)] = "",
) -> OAuthSessionOut | RedirectResponse:
    """The forge's redirect: signs in (or links) and returns a session (to the console, as its
    cookie, when the console started the sign-in)."""
    signed = await oauth.callback(session, ctx, provider, code=code, state=state)
    await session.commit()
    if request.cookies.get(CONSOLE_MARKER):
        redirect = RedirectResponse("/projects", status_code=303)
        set_session_cookie(request, redirect, signed.token)
        redirect.delete_cookie(CONSOLE_MARKER, path="/v1/auth/oauth")
        return redirect
    out = render.session_out(signed.session, signed.token)
    return OAuthSessionOut(**out.model_dump(), created=signed.created, linked=signed.linked)
