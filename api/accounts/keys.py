"""/v1/api-keys: create (the raw key is shown once), list and revoke API keys."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request, Response

from api.accounts.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut
from api.deps import Admin, OriginDep, SessionDep
from api.pagination import Page, PageDep, build_page
from core.accounts import keys
from core.accounts.key_leases import KeyLeases

router = APIRouter()


@router.post("/api-keys", tags=["api-keys"], status_code=201, response_model=ApiKeyCreated)
async def create_api_key(
    body: ApiKeyCreate, session: SessionDep, origin: OriginDep, principal: Admin
) -> ApiKeyCreated:
    """The full key is in this response only; store it now."""
    key, raw = await keys.create_api_key(
        session,
        origin,
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
    principal: Admin,
    page: PageDep,
) -> Page[ApiKeyOut]:
    rows = await keys.list_api_keys(session, principal, cursor=page.cursor, limit=page.limit)
    return build_page(rows, limit=page.limit, to_item=ApiKeyOut.model_validate)


@router.delete("/api-keys/{key_id}", tags=["api-keys"], status_code=204)
async def revoke_api_key(
    key_id: UUID, session: SessionDep, origin: OriginDep, principal: Admin, request: Request
) -> Response:
    await keys.revoke_api_key(session, origin, principal, key_id)
    # This process's lease of the key ends now; other processes' within their TTL.
    leases: KeyLeases | None = getattr(request.app.state, "key_leases", None)
    if leases is not None:
        leases.forget(key_id)
    return Response(status_code=204)
