"""The request session of a GET (api.deps.get_session): it holds one autocommit connection that
hot statements reuse (core/driver.py); ORM changes left pending are still committed; a commit in
the middle gives the connection back, and later statements take a fresh one, never the returned
one; a write request holds none."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import literal, select

from api.deps import SessionDep
from core.driver import DriverStatement, driver_rows, read_connection
from db.models.accounts import Organization

_ONE = DriverStatement(select(literal(1).label("one")))


def read_app(session_maker: Any) -> FastAPI:
    app = FastAPI()
    app.state.session_maker = session_maker

    @app.get("/held")
    async def held(session: SessionDep) -> dict[str, Any]:
        rows = await driver_rows(session, _ONE, {})
        return {"held": read_connection(session) is not None, "one": rows[0]["one"]}

    @app.post("/held")
    async def held_on_write(session: SessionDep) -> dict[str, Any]:
        return {"held": read_connection(session) is not None}

    @app.get("/add/{slug}")
    async def add(slug: str, session: SessionDep) -> dict[str, str]:
        session.add(Organization(name="Made by a GET", slug=slug))
        return {"slug": slug}

    @app.get("/commit-then-read")
    async def commit_then_read(session: SessionDep) -> dict[str, Any]:
        before = read_connection(session)
        await session.commit()  # the session gives its connection back to the pool
        after = read_connection(session)
        rows = await driver_rows(session, _ONE, {})
        return {"before": before is not None, "after": after is not None, "one": rows[0]["one"]}

    return app


@pytest.fixture
async def client(session_maker: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=read_app(session_maker))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def test_a_get_holds_one_connection_and_a_write_none(client: httpx.AsyncClient) -> None:
    assert (await client.get("/held")).json() == {"held": True, "one": 1}
    assert (await client.post("/held")).json() == {"held": False}


async def test_orm_changes_a_get_leaves_pending_are_committed(
    client: httpx.AsyncClient, session_maker: Any
) -> None:
    slug = f"get-{uuid.uuid4().hex[:10]}"
    assert (await client.get(f"/add/{slug}")).status_code == 200
    async with session_maker() as session:
        found = await session.scalar(select(Organization.id).where(Organization.slug == slug))
    assert found is not None


async def test_a_commit_mid_request_never_reuses_the_returned_connection(
    client: httpx.AsyncClient,
) -> None:
    # Concurrent requests: a returned connection reused by this request would be shared with
    # another one that checked it out meanwhile (asyncpg refuses concurrent operations).
    answers = await asyncio.gather(*(client.get("/commit-then-read") for _ in range(20)))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"before": True, "after": False, "one": 1}
