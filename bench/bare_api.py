"""The bare baseline of bench_projects_api: a minimal FastAPI + asyncpg app serving the same hot
reads with the same SQL and the same JSON shape, the way a small app with bearer API keys would
(one indexed lookup of the key's hash, then the query; no rate limit, no metering, no middleware).

Run under uvicorn by the benchmark: `uvicorn bench.bare_api:create_app --factory`, with
FORGELINE_BENCH_BARE_DSN (a plain postgresql:// DSN) and FORGELINE_BENCH_BARE_POOL (connections).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Request, Response

PROJECT_COLUMNS = (
    "id, organization_id, created_by_user_id, name, slug, description, project_type, "
    "framework, config, status, archived_at, created_at, updated_at"
)
ENV_COLUMNS = (
    "e.id, e.project_id, e.name, e.env_type, e.provider, e.config, e.url, e.is_protected, "
    "e.required_approvals, e.auto_deploy, e.status, e.created_at, e.updated_at"
)
SQL = {
    "key": "SELECT organization_id, scopes, revoked_at, expires_at FROM api_keys "
    "WHERE key_hash = $1",
    "list projects": f"SELECT {PROJECT_COLUMNS} FROM projects WHERE organization_id = $1 "
    "AND status <> 'archived' ORDER BY created_at DESC, id DESC LIMIT $2",
    "get project": f"SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1 AND organization_id = $2",
    "list environments": f"SELECT {ENV_COLUMNS} FROM environments e JOIN projects p "
    "ON p.id = e.project_id WHERE e.project_id = $1 AND p.organization_id = $2 "
    "ORDER BY e.created_at DESC, e.id DESC LIMIT $3",
    "get environment": f"SELECT {ENV_COLUMNS} FROM environments e JOIN projects p "
    "ON p.id = e.project_id WHERE e.id = $1 AND p.organization_id = $2",
}
# The project config's response shape (every documented field, as the API answers it).
CONFIG_DEFAULTS: dict[str, Any] = {
    "root_directory": None,
    "install_command": None,
    "build_command": None,
    "test_command": None,
    "output_directory": None,
    "node_version": None,
    "python_version": None,
    "environment_variables": [],
    "headers": [],
    "rewrites": [],
    "redirects": [],
}


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # UUID


def _json(data: object) -> Response:
    return Response(
        json.dumps(data, default=_default, separators=(",", ":")), media_type="application/json"
    )


def _cursor(row: asyncpg.Record) -> str:
    payload = json.dumps([row["created_at"].isoformat(), str(row["id"])], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _page(rows: list[asyncpg.Record], limit: int, item: Any) -> Response:
    visible = rows[:limit]
    next_cursor = _cursor(visible[-1]) if len(rows) > limit and visible else None
    return _json({"items": [item(r) for r in visible], "next_cursor": next_cursor})


def _project(row: asyncpg.Record) -> dict[str, Any]:
    data = dict(row)
    data["config"] = {**CONFIG_DEFAULTS, **(data["config"] or {})}
    return data


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def organization(request: Request) -> uuid.UUID:
    """Bearer API key -> its organization: one indexed lookup by the key's SHA-256."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer token")
    key_hash = hashlib.sha256(token.encode()).hexdigest()
    key = await request.app.state.pool.fetchrow(SQL["key"], key_hash)
    if key is None or key["revoked_at"] is not None:
        raise HTTPException(401, "invalid API key")
    if key["expires_at"] is not None and key["expires_at"] <= datetime.now(UTC):
        raise HTTPException(401, "expired API key")
    if "projects:read" not in key["scopes"]:
        raise HTTPException(403, "projects:read needed")
    org_id: uuid.UUID = key["organization_id"]
    return org_id


Org = Annotated[uuid.UUID, Depends(organization)]


def create_app() -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        size = int(os.environ.get("FORGELINE_BENCH_BARE_POOL", "30"))
        app.state.pool = await asyncpg.create_pool(
            os.environ["FORGELINE_BENCH_BARE_DSN"],
            min_size=size,
            max_size=size,
            init=_init_connection,
        )
        yield
        await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/projects")
    async def list_projects(request: Request, org: Org, limit: int = 50) -> Response:
        rows = await request.app.state.pool.fetch(SQL["list projects"], org, limit + 1)
        return _page(rows, limit, _project)

    @app.get("/v1/projects/{project_id}")
    async def get_project(request: Request, org: Org, project_id: uuid.UUID) -> Response:
        row = await request.app.state.pool.fetchrow(SQL["get project"], project_id, org)
        if row is None:
            raise HTTPException(404, "project not found")
        return _json(_project(row))

    @app.get("/v1/projects/{project_id}/environments")
    async def list_environments(
        request: Request, org: Org, project_id: uuid.UUID, limit: int = 50
    ) -> Response:
        rows = await request.app.state.pool.fetch(
            SQL["list environments"], project_id, org, limit + 1
        )
        return _page(rows, limit, dict)

    @app.get("/v1/environments/{environment_id}")
    async def get_environment(request: Request, org: Org, environment_id: uuid.UUID) -> Response:
        row = await request.app.state.pool.fetchrow(SQL["get environment"], environment_id, org)
        if row is None:
            raise HTTPException(404, "environment not found")
        return _json(dict(row))

    return app
