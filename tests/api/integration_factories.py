"""Cross-tenant matrix factories of the forge integration routes (registered in
tenancy_factories): a GitHub App installation held by the owning organization, and the body
that connects a project's repository through it."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.projects import GitProviderConnection
from db.session import session_scope


class Context(Protocol):
    session_maker: async_sessionmaker[AsyncSession]
    org: Any

    async def ensure(self, param: str) -> uuid.UUID: ...


async def app_connection_factory(ctx: Context) -> uuid.UUID:
    """A GitHub App installation held by ctx.org, covering the matrix repository."""
    connection_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        session.add(
            GitProviderConnection(
                id=connection_id,
                organization_id=ctx.org.org_id,
                provider="github",
                installation_id=uuid.uuid4().int % 2**62,
                installation_repositories=["forgeline/matrix"],
            )
        )
    return connection_id


async def app_repository_body(ctx: Context) -> dict[str, str]:
    """The project's repository through the organization's App installation."""
    return {
        "connection_id": str(await ctx.ensure("connection_id")),
        "repository": "forgeline/matrix",
    }


INTEGRATION_FACTORIES = {"connection_id": app_connection_factory}
