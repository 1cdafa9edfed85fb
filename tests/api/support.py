"""Arrange code of the account tests: sign-up through the API, bearer headers, clients whose
requests come from a chosen loopback address, an organization's audit trail, and what the
database holds of a person's notifications and links."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.accounts import Notification, PasswordResetToken
from db.models.operations import AuditLog
from tests.conftest import _with_lifespan_state, loopback_client_address

Maker = async_sessionmaker[AsyncSession]
PASSWORD = "a long enough password"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_at(app: Any, address: str | None = None) -> httpx.AsyncClient:
    """A client of `app` whose requests come from `address` (a loopback address; the ASGI
    transport sends nothing over the network)."""
    state = getattr(app.state, "forgeline_lifespan_state", {})
    transport = httpx.ASGITransport(
        app=_with_lifespan_state(app, state),
        client=(address or loopback_client_address(), 50000),
    )
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def signup(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    """A new owner of a new organization, signed in (the email in mixed case, as typed)."""
    suffix = uuid.uuid4().hex[:10]
    body = {
        "email": f"Person-{suffix}@Example.com",
        "password": PASSWORD,
        "name": "Person",
        "organization_name": f"Acme {suffix}",
        **overrides,
    }
    response = await client.post("/v1/auth/signup", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def login(api: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await api.post("/v1/auth/login", json={"email": email, "password": password})


async def audit_actions(session_maker: Maker, org_id: uuid.UUID | str) -> list[str]:
    async with session_maker() as session:
        rows = await session.execute(
            select(AuditLog.action)
            .where(AuditLog.organization_id == uuid.UUID(str(org_id)))
            .order_by(AuditLog.created_at, AuditLog.id)
        )
        return list(rows.scalars())


async def stored_text(session_maker: Maker, user_id: uuid.UUID) -> str:
    """Everything the database holds for the user's notifications and links, as text."""
    async with session_maker() as session:
        notes = (
            await session.execute(
                select(Notification.title, Notification.body, Notification.data).where(
                    Notification.user_id == user_id
                )
            )
        ).all()
        links = (
            await session.execute(
                select(PasswordResetToken.token_hash).where(PasswordResetToken.user_id == user_id)
            )
        ).all()
    return repr(notes) + repr(links)
