"""`/v1/sites/{deployment_id}/...`: a `static` deployment's published files on the API's origin,
kept for links made before sites got their own host names."""

from __future__ import annotations

import asyncio
import uuid

from fastapi import APIRouter, Response

from api.deps import SessionDep, SettingsDep
from core.deployments import repository
from forgeline.errors import NotFound
from infra.sites import content_type, resolve_site_key
from infra.storage import ObjectNotFound, create_object_store

router = APIRouter(tags=["sites"])

# No allow-same-origin: the document runs in an opaque origin, never the API's.
SITE_SANDBOX_HEADERS = {
    "Content-Security-Policy": "sandbox allow-scripts allow-forms allow-popups allow-downloads; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


@router.get("/sites/{deployment_id}/{path:path}", include_in_schema=True)
async def serve_site(
    deployment_id: uuid.UUID, path: str, session: SessionDep, settings: SettingsDep
) -> Response:
    """A `static` deployment's published files (public, like a website). Served sandboxed (an
    opaque origin: the page's scripts cannot act as the API's origin or read its storage); the
    deployment's URL on its own host is the canonical one."""
    row = await repository.published_site(session, deployment_id)
    if row is None or not row.artifact_key:
        raise NotFound("site not found", resource_type="site")
    key = resolve_site_key(row.artifact_key, path)
    if key is None:
        raise NotFound("file not found", resource_type="site_file")
    store = create_object_store(settings)
    try:
        body = await asyncio.to_thread(store.get_bytes, key)
    except ObjectNotFound as exc:
        raise NotFound("file not found", resource_type="site_file") from exc
    return Response(content=body, media_type=content_type(key), headers=SITE_SANDBOX_HEADERS)
