"""`/healthz`: is the database reachable, is Temporal reachable (200 when both are, else 503)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.temporal import TemporalConnection

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 2.0


async def _check_database(session_maker: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with session_maker() as session:
            await asyncio.wait_for(session.execute(text("SELECT 1")), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:  # reported, not raised: health must answer even when the DB is down
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


async def _check_temporal(connection: TemporalConnection) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        client = await connection.get()
        healthy = await client.service_client.check_health(
            timeout=timedelta(seconds=CHECK_TIMEOUT_SECONDS)
        )
    except Exception as exc:  # reported, not raised
        return {"ok": False, "error": connection.last_error or type(exc).__name__}
    if not healthy:
        return {"ok": False, "error": "not serving"}
    return {
        "ok": True,
        "namespace": client.namespace,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
    }


@router.get(
    "/healthz",
    summary="Database and Temporal reachability",
    responses={503: {"description": "The database or Temporal is unreachable"}},
)
async def healthz(request: Request) -> JSONResponse:
    database, temporal = await asyncio.gather(
        _check_database(request.app.state.session_maker),
        _check_temporal(request.app.state.temporal),
    )
    ok = database["ok"] and temporal["ok"]
    body = {"status": "ok" if ok else "degraded", "database": database, "temporal": temporal}
    return JSONResponse(body, status_code=200 if ok else 503)
