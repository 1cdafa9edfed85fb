"""Accounts API under /v1: the caller and their organization here; auth, members and API keys
in their own modules, all served by this module's router."""

from __future__ import annotations

from fastapi import APIRouter

from api.accounts import auth, keys, members
from api.accounts.schemas import MeOut, OrganizationOut, OrganizationUpdate, UserOut
from api.deps import (
    AccountContextDep,
    Admin,
    PrincipalDep,
    ProjectsReader,
    SessionDep,
)
from core.accounts import organizations, sessions

router = APIRouter()  # mounted under /v1 by the app
# Included in the order the routes are documented: auth, the caller, members, API keys.
router.include_router(auth.router)


@router.get("/me", tags=["accounts"], response_model=MeOut)
async def me(session: SessionDep, principal: PrincipalDep) -> MeOut:
    org = await organizations.current_organization(session, principal)
    user = await sessions.current_user(session, principal)
    return MeOut(
        user=UserOut.model_validate(user) if user else None,
        organization=OrganizationOut.model_validate(org),
        role=principal.role,
        scopes=sorted(principal.scopes),
        auth_method="api_key" if principal.api_key_id else "session",
        api_key_id=principal.api_key_id,
    )


@router.get("/organizations/current", tags=["accounts"], response_model=OrganizationOut)
async def get_organization(session: SessionDep, principal: ProjectsReader) -> OrganizationOut:
    return OrganizationOut.model_validate(
        await organizations.current_organization(session, principal)
    )


@router.patch("/organizations/current", tags=["accounts"], response_model=OrganizationOut)
async def update_organization(
    body: OrganizationUpdate, session: SessionDep, ctx: AccountContextDep, principal: Admin
) -> OrganizationOut:
    org = await organizations.update_organization(
        session, ctx, principal, body.model_dump(exclude_unset=True, exclude_none=True)
    )
    return OrganizationOut.model_validate(org)


router.include_router(members.router)
router.include_router(keys.router)
