"""/v1/auth: sign-up, sign-in, session rotation and logout, password reset, TOTP."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.accounts import render
from api.accounts.schemas import (
    LoginRequest,
    OrganizationOut,
    PasswordResetConfirm,
    PasswordResetRequest,
    SessionOut,
    SignupOut,
    SignupRequest,
    TotpCodeRequest,
    TotpEnrollOut,
    TotpStatusOut,
    UserOut,
)
from api.deps import AccountContextDep, SessionDep, SessionPrincipalDep
from core.accounts import organizations, passwords, sessions, totp

router = APIRouter()


@router.post("/auth/signup", tags=["auth"], status_code=201, response_model=SignupOut)
async def signup(body: SignupRequest, session: SessionDep, ctx: AccountContextDep) -> SignupOut:
    """Create a user, a new organization and the owner membership; returns a session."""
    created, row, raw = await organizations.signup(
        session,
        ctx,
        email=body.email,
        password=body.password,
        name=body.name,
        organization_name=body.organization_name,
        organization_slug=body.organization_slug,
    )
    return SignupOut(
        user=UserOut.model_validate(created.user),
        organization=OrganizationOut.model_validate(created.organization),
        session=render.session_out(row, raw),
    )


@router.post("/auth/login", tags=["auth"], response_model=SessionOut)
async def login(body: LoginRequest, session: SessionDep, ctx: AccountContextDep) -> SessionOut:
    row, raw = await sessions.login(
        session,
        ctx,
        email=body.email,
        password=body.password,
        totp_code=body.totp_code,
        organization_slug=body.organization_slug,
    )
    return render.session_out(row, raw)


@router.post("/auth/refresh", tags=["auth"], response_model=SessionOut)
async def refresh(
    session: SessionDep, ctx: AccountContextDep, principal: SessionPrincipalDep
) -> SessionOut:
    """Exchange the current session token for a new one; the old token is revoked."""
    row, raw = await sessions.refresh(session, ctx, principal)
    return render.session_out(row, raw)


@router.post("/auth/logout", tags=["auth"], status_code=204)
async def logout(
    session: SessionDep, ctx: AccountContextDep, principal: SessionPrincipalDep
) -> Response:
    await sessions.logout(session, ctx, principal)
    return Response(status_code=204)


@router.post("/auth/password-reset/request", tags=["auth"], status_code=202)
async def password_reset_request(
    body: PasswordResetRequest, session: SessionDep, ctx: AccountContextDep
) -> dict[str, str]:
    """Records a reset link as a notification for the account, if there is one."""
    await passwords.request_password_reset(session, ctx, body.email)
    return {"status": "accepted"}


@router.post("/auth/password-reset/confirm", tags=["auth"], status_code=204)
async def password_reset_confirm(
    body: PasswordResetConfirm, session: SessionDep, ctx: AccountContextDep
) -> Response:
    await passwords.confirm_password_reset(session, ctx, body.token, body.new_password)
    return Response(status_code=204)


@router.post("/auth/totp/enroll", tags=["auth"], response_model=TotpEnrollOut)
async def totp_enroll(
    session: SessionDep, ctx: AccountContextDep, principal: SessionPrincipalDep
) -> TotpEnrollOut:
    secret, uri = await totp.enroll(session, ctx, principal)
    return TotpEnrollOut(secret=secret, otpauth_uri=uri)


@router.post("/auth/totp/confirm", tags=["auth"], response_model=TotpStatusOut)
async def totp_confirm(
    body: TotpCodeRequest,
    session: SessionDep,
    ctx: AccountContextDep,
    principal: SessionPrincipalDep,
) -> TotpStatusOut:
    await totp.confirm(session, ctx, principal, body.code)
    return TotpStatusOut(enabled=True)


@router.post("/auth/totp/disable", tags=["auth"], response_model=TotpStatusOut)
async def totp_disable(
    body: TotpCodeRequest,
    session: SessionDep,
    ctx: AccountContextDep,
    principal: SessionPrincipalDep,
) -> TotpStatusOut:
    await totp.disable(session, ctx, principal, body.code)
    return TotpStatusOut(enabled=False)
