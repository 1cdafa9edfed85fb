"""Factories for the cross-tenant matrix (test_tenancy_matrix.py): one per ID path parameter.

Every route with an `..._id` path parameter is called with another organization's key; the
matrix needs an object of that kind in the owning organization. To cover a new route, add a
coroutine to FACTORIES under the parameter name. A factory inserts rows directly with the
session maker and returns the new id; it calls `ctx.ensure("<other_param>")` for the parents it
needs, so nested routes (`/projects/{project_id}/environments/{environment_id}`) get a
consistent chain.

Non-ID path parameters get a value from PATH_VALUES; request bodies are generated from the
OpenAPI schema, with BODIES overriding where a generated body would not pass validation.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.projects import Environment, Project, Repository
from db.session import session_scope
from tests.factories import OrgFixture


@dataclass
class FactoryContext:
    session_maker: async_sessionmaker[AsyncSession]
    org: OrgFixture
    ids: dict[str, uuid.UUID] = field(default_factory=dict)

    async def ensure(self, param: str) -> uuid.UUID:
        """The id for `param` in this chain, created through its factory on first use."""
        if param not in self.ids:
            factory = FACTORIES.get(param)
            if factory is None:
                raise LookupError(f"add a factory for {param} in tests/api/tenancy_factories.py")
            self.ids[param] = await factory(self)
        return self.ids[param]


Factory = Callable[[FactoryContext], Awaitable[uuid.UUID]]


async def project_factory(ctx: FactoryContext) -> uuid.UUID:
    project_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        session.add(
            Project(
                id=project_id,
                organization_id=ctx.org.org_id,
                name="Matrix project",
                slug=f"matrix-{project_id.hex[:12]}",
                project_type="static_site",
                framework="static_html",
                config={},
            )
        )
        # Routes under /projects/{project_id}/repository need one to exist.
        session.add(
            Repository(
                project_id=project_id,
                provider="github",
                url="https://github.com/forgeline/matrix.git",
                default_branch="main",
            )
        )
    return project_id


async def environment_factory(ctx: FactoryContext) -> uuid.UUID:
    project_id = await ctx.ensure("project_id")
    environment_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        session.add(
            Environment(
                id=environment_id,
                project_id=project_id,
                name=f"env-{environment_id.hex[:8]}",
                env_type="staging",
                provider="static",
                config={},
            )
        )
    return environment_id


async def api_key_factory(ctx: FactoryContext) -> uuid.UUID:
    """A second key, so the owner's sanity call revoking it does not lock the test out."""
    from api.accounts.service import insert_api_key

    async with session_scope(ctx.session_maker) as session:
        key, _raw = await insert_api_key(
            session,
            organization_id=ctx.org.org_id,
            created_by_user_id=ctx.org.user_id,
            name="matrix key",
            scopes=["projects:read"],
        )
    return key.id


async def member_factory(ctx: FactoryContext) -> uuid.UUID:
    """A plain member (not the owner, so removing it in the sanity call is allowed)."""
    from db.models.accounts import OrganizationMember, User

    member_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        user = User(id=uuid.uuid4(), email=f"m-{member_id.hex}@example.com", name="Matrix member")
        session.add(user)
        await session.flush()
        session.add(
            OrganizationMember(
                id=member_id, organization_id=ctx.org.org_id, user_id=user.id, role="member"
            )
        )
    return member_id


# Path parameter name -> factory creating that object in ctx.org. Add yours here.
FACTORIES: dict[str, Factory] = {
    "project_id": project_factory,
    "environment_id": environment_factory,
    "key_id": api_key_factory,
    "api_key_id": api_key_factory,
    "member_id": member_factory,
}

# Values for path parameters that are not ids (`{period}`, `{name}` ...).
PATH_VALUES: dict[str, str] = {}

# (METHOD, path template) -> JSON body, where the schema-generated body is not valid.
BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/v1/projects/{project_id}/repository"): {
        "provider": "github",
        "url": "https://github.com/forgeline/matrix.git",
    },
    ("POST", "/v1/projects/{project_id}/environments"): {
        "name": "matrix-env",
        "env_type": "staging",
        "provider": "static",
    },
}

# (METHOD, path template) -> why the route is deliberately reachable across tenants (e.g. a
# public, unguessable-URL site preview). Keep this empty unless there is a product reason.
EXEMPT: dict[tuple[str, str], str] = {}
