"""Accounts API under /v1: auth, me, current organization, members, API keys."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Select, select

from api.accounts import invitations, service
from api.accounts.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    InvitationAccepted,
    InvitationOut,
    LoginRequest,
    MemberAdd,
    MemberInvite,
    MemberOut,
    MemberRoleUpdate,
    MeOut,
    MyInvitationOut,
    OrganizationOut,
    OrganizationUpdate,
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
from api.accounts.scopes import ADMIN, PROJECTS_READ
from api.deps import (
    Principal,
    PrincipalDep,
    SessionDep,
    require_scope,
    require_session_principal,
)
from api.pagination import CursorParam, LimitParam, Page, build_page, paginate
from db.models.accounts import (
    ApiKey,
    Organization,
    OrganizationInvitation,
    OrganizationMember,
    User,
    UserSession,
)

router = APIRouter(prefix="/v1")

AdminPrincipal = Annotated[Principal, Depends(require_scope(ADMIN))]
ReaderPrincipal = Annotated[Principal, Depends(require_scope(PROJECTS_READ))]
SessionPrincipal = Annotated[Principal, Depends(require_session_principal)]


def _session_out(row: UserSession, raw: str) -> SessionOut:
    assert row.organization_id is not None
    return SessionOut(
        token=raw,
        expires_at=row.expires_at,
        user_id=row.user_id,
        organization_id=row.organization_id,
    )


def _member_out(member: OrganizationMember, user: User) -> MemberOut:
    return MemberOut(
        id=member.id,
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=member.role,  # type: ignore[arg-type]  # CHECK constraint keeps it in OrgRole
        created_at=member.created_at,
    )


def _invitation_out(invitation: OrganizationInvitation, user: User) -> InvitationOut:
    return InvitationOut(
        id=invitation.id,
        user_id=user.id,
        email=user.email,
        role=invitation.role,  # type: ignore[arg-type]
        status=invitation.status,  # type: ignore[arg-type]
        expires_at=invitation.expires_at,
        created_at=invitation.created_at,
    )


def _my_invitation_out(invitation: OrganizationInvitation, org: Organization) -> MyInvitationOut:
    return MyInvitationOut(
        id=invitation.id,
        organization_id=org.id,
        organization_name=org.name,
        organization_slug=org.slug,
        role=invitation.role,  # type: ignore[arg-type]
        expires_at=invitation.expires_at,
        created_at=invitation.created_at,
    )


# ---------------------------------------------------------------- auth


@router.post("/auth/signup", tags=["auth"], status_code=201, response_model=SignupOut)
async def signup(body: SignupRequest, session: SessionDep, request: Request) -> SignupOut:
    """Create a user, a new organization and the owner membership; returns a session."""
    created, row, raw = await service.signup(
        session,
        request,
        email=body.email,
        password=body.password,
        name=body.name,
        organization_name=body.organization_name,
        organization_slug=body.organization_slug,
    )
    return SignupOut(
        user=UserOut.model_validate(created.user),
        organization=OrganizationOut.model_validate(created.organization),
        session=_session_out(row, raw),
    )


@router.post("/auth/login", tags=["auth"], response_model=SessionOut)
async def login(body: LoginRequest, session: SessionDep, request: Request) -> SessionOut:
    row, raw = await service.login(
        session,
        request,
        email=body.email,
        password=body.password,
        totp_code=body.totp_code,
        organization_slug=body.organization_slug,
    )
    return _session_out(row, raw)


@router.post("/auth/refresh", tags=["auth"], response_model=SessionOut)
async def refresh(session: SessionDep, request: Request, principal: SessionPrincipal) -> SessionOut:
    """Exchange the current session token for a new one; the old token is revoked."""
    row, raw = await service.refresh(session, request, principal)
    return _session_out(row, raw)


@router.post("/auth/logout", tags=["auth"], status_code=204)
async def logout(session: SessionDep, request: Request, principal: SessionPrincipal) -> Response:
    await service.logout(session, request, principal)
    return Response(status_code=204)


@router.post("/auth/password-reset/request", tags=["auth"], status_code=202)
async def password_reset_request(
    body: PasswordResetRequest, session: SessionDep, request: Request
) -> dict[str, str]:
    """Records a reset link as a notification for the account, if there is one."""
    await service.request_password_reset(session, request, body.email)
    return {"status": "accepted"}


@router.post("/auth/password-reset/confirm", tags=["auth"], status_code=204)
async def password_reset_confirm(
    body: PasswordResetConfirm, session: SessionDep, request: Request
) -> Response:
    await service.confirm_password_reset(session, request, body.token, body.new_password)
    return Response(status_code=204)


@router.post("/auth/totp/enroll", tags=["auth"], response_model=TotpEnrollOut)
async def totp_enroll(
    session: SessionDep, request: Request, principal: SessionPrincipal
) -> TotpEnrollOut:
    secret, uri = await service.totp_enroll(session, request, principal)
    return TotpEnrollOut(secret=secret, otpauth_uri=uri)


@router.post("/auth/totp/confirm", tags=["auth"], response_model=TotpStatusOut)
async def totp_confirm(
    body: TotpCodeRequest, session: SessionDep, request: Request, principal: SessionPrincipal
) -> TotpStatusOut:
    await service.totp_confirm(session, request, principal, body.code)
    return TotpStatusOut(enabled=True)


@router.post("/auth/totp/disable", tags=["auth"], response_model=TotpStatusOut)
async def totp_disable(
    body: TotpCodeRequest, session: SessionDep, request: Request, principal: SessionPrincipal
) -> TotpStatusOut:
    await service.totp_disable(session, request, principal, body.code)
    return TotpStatusOut(enabled=False)


# ---------------------------------------------------------------- me and organization


@router.get("/me", tags=["accounts"], response_model=MeOut)
async def me(session: SessionDep, principal: PrincipalDep) -> MeOut:
    org = await service.current_organization(session, principal)
    user = await session.get(User, principal.user_id) if principal.user_id else None
    return MeOut(
        user=UserOut.model_validate(user) if user else None,
        organization=OrganizationOut.model_validate(org),
        role=principal.role,  # type: ignore[arg-type]
        scopes=sorted(principal.scopes),
        auth_method="api_key" if principal.api_key_id else "session",
        api_key_id=principal.api_key_id,
    )


@router.get("/organizations/current", tags=["accounts"], response_model=OrganizationOut)
async def get_organization(session: SessionDep, principal: ReaderPrincipal) -> OrganizationOut:
    return OrganizationOut.model_validate(await service.current_organization(session, principal))


@router.patch("/organizations/current", tags=["accounts"], response_model=OrganizationOut)
async def update_organization(
    body: OrganizationUpdate, session: SessionDep, request: Request, principal: AdminPrincipal
) -> OrganizationOut:
    org = await service.update_organization(
        session, request, principal, body.model_dump(exclude_unset=True, exclude_none=True)
    )
    return OrganizationOut.model_validate(org)


# ---------------------------------------------------------------- members


@router.get("/members", tags=["members"], response_model=Page[MemberOut])
async def list_members(
    session: SessionDep,
    principal: ReaderPrincipal,
    limit: LimitParam = 50,
    cursor: CursorParam = None,
) -> Page[MemberOut]:
    members: Select[Any] = (
        select(OrganizationMember, User)  # type: ignore[assignment]
        .join(User, User.id == OrganizationMember.user_id)
        .where(OrganizationMember.organization_id == principal.organization_id)
    )
    stmt = paginate(
        members,
        OrganizationMember.created_at,
        OrganizationMember.id,
        cursor=cursor,
        limit=limit,
    )
    rows = [(row[0], row[1]) for row in (await session.execute(stmt)).all()]
    return build_page(
        rows,
        limit=limit,
        key=lambda row: (row[0].created_at, row[0].id),
        to_item=lambda row: _member_out(row[0], row[1]),
    )


@router.post("/members", tags=["members"], status_code=202, response_model=InvitationOut)
async def add_member(
    body: MemberAdd, session: SessionDep, request: Request, principal: AdminPrincipal
) -> InvitationOut:
    """Invite an existing user: they become a member when they accept
    (`POST /v1/me/invitations/{id}/accept`)."""
    invitation, user = await service.invite_member(
        session, request, principal, email=body.email, role=body.role
    )
    return _invitation_out(invitation, user)


@router.post(
    "/members/invitations", tags=["members"], status_code=201, response_model=InvitationOut
)
async def invite_member(
    body: MemberInvite, session: SessionDep, request: Request, principal: AdminPrincipal
) -> InvitationOut:
    """Invite by email. An unknown email gets an account without a password and, by e-mail, a
    set-password link that also accepts; an existing user accepts after signing in."""
    invitation, user = await service.invite_member(
        session,
        request,
        principal,
        email=body.email,
        role=body.role,
        invite_name=body.name,
        create_account=True,
    )
    return _invitation_out(invitation, user)


@router.get("/members/invitations", tags=["members"], response_model=list[InvitationOut])
async def list_invitations(session: SessionDep, principal: AdminPrincipal) -> list[InvitationOut]:
    """Pending, unexpired invitations of the organization."""
    rows = await service.list_invitations(session, principal)
    return [_invitation_out(invitation, user) for invitation, user in rows]


@router.delete("/members/invitations/{invitation_id}", tags=["members"], status_code=204)
async def revoke_invitation(
    invitation_id: UUID, session: SessionDep, request: Request, principal: AdminPrincipal
) -> Response:
    await service.revoke_invitation(session, request, principal, invitation_id)
    return Response(status_code=204)


@router.get("/me/invitations", tags=["members"], response_model=list[MyInvitationOut])
async def my_invitations(session: SessionDep, principal: SessionPrincipal) -> list[MyInvitationOut]:
    """Invitations waiting for my answer (pending and unexpired)."""
    rows = await invitations.list_mine(session, principal)
    return [_my_invitation_out(invitation, org) for invitation, org in rows]


@router.post(
    "/me/invitations/{invitation_id}/accept",
    tags=["members"],
    response_model=InvitationAccepted,
)
async def accept_invitation(
    invitation_id: UUID, session: SessionDep, request: Request, principal: SessionPrincipal
) -> InvitationAccepted:
    """Join the organization; sign in to it with `organization_slug` at login."""
    member, org = await invitations.accept(session, request, principal, invitation_id)
    user = await session.get(User, member.user_id)
    assert user is not None
    return InvitationAccepted(
        organization=OrganizationOut.model_validate(org), member=_member_out(member, user)
    )


@router.post("/me/invitations/{invitation_id}/decline", tags=["members"], status_code=204)
async def decline_invitation(
    invitation_id: UUID, session: SessionDep, request: Request, principal: SessionPrincipal
) -> Response:
    await invitations.decline(session, request, principal, invitation_id)
    return Response(status_code=204)


@router.patch("/members/{member_id}", tags=["members"], response_model=MemberOut)
async def change_member_role(
    member_id: UUID,
    body: MemberRoleUpdate,
    session: SessionDep,
    request: Request,
    principal: AdminPrincipal,
) -> MemberOut:
    member, user = await service.change_member_role(
        session, request, principal, member_id, body.role
    )
    return _member_out(member, user)


@router.delete("/members/{member_id}", tags=["members"], status_code=204)
async def remove_member(
    member_id: UUID, session: SessionDep, request: Request, principal: AdminPrincipal
) -> Response:
    await service.remove_member(session, request, principal, member_id)
    return Response(status_code=204)


# ---------------------------------------------------------------- API keys


@router.post("/api-keys", tags=["api-keys"], status_code=201, response_model=ApiKeyCreated)
async def create_api_key(
    body: ApiKeyCreate, session: SessionDep, request: Request, principal: AdminPrincipal
) -> ApiKeyCreated:
    """The full key is in this response only; store it now."""
    key, raw = await service.create_api_key(
        session,
        request,
        principal,
        name=body.name,
        scopes=list(body.scopes),
        expires_at=body.expires_at,
        expires_in_days=body.expires_in_days,
        rate_limit_per_minute=body.rate_limit_per_minute,
    )
    return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), key=raw)


@router.get("/api-keys", tags=["api-keys"], response_model=Page[ApiKeyOut])
async def list_api_keys(
    session: SessionDep,
    principal: AdminPrincipal,
    limit: LimitParam = 50,
    cursor: CursorParam = None,
) -> Page[ApiKeyOut]:
    stmt = paginate(
        select(ApiKey).where(ApiKey.organization_id == principal.organization_id),
        ApiKey.created_at,
        ApiKey.id,
        cursor=cursor,
        limit=limit,
    )
    rows = list((await session.execute(stmt)).scalars())
    return build_page(
        rows, limit=limit, key=lambda k: (k.created_at, k.id), to_item=ApiKeyOut.model_validate
    )


@router.delete("/api-keys/{key_id}", tags=["api-keys"], status_code=204)
async def revoke_api_key(
    key_id: UUID, session: SessionDep, request: Request, principal: AdminPrincipal
) -> Response:
    await service.revoke_api_key(session, request, principal, key_id)
    return Response(status_code=204)
