"""An artifact streamed from the object store as a download, for the API and the console."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from api.runs.logs import object_store
from db.models.pipelines import Artifact


async def artifact_response(
    request: Request,
    artifact: Artifact,
    *,
    filename: str,
    media_type: str,
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    """The artifact's bytes read chunk by chunk off the event loop (the store's client blocks)."""
    chunks = await asyncio.to_thread(object_store(request).iter_chunks, artifact.object_key)

    async def body() -> AsyncIterator[bytes]:
        while True:
            block = await asyncio.to_thread(next, chunks, b"")
            if not block:
                return
            yield block

    return StreamingResponse(
        body(),
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(artifact.size_bytes),
            **(headers or {}),
        },
    )
