"""Request dependencies: the request-scoped DB session, the authenticated Principal and scope
checks, the Temporal client and the settings.

    @router.get("/projects")
    async def list_projects(
        session: SessionDep, principal: Annotated[Principal, Depends(require_scope(PROJECTS_READ))]
    ) -> ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import CursorResult, Executable
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.accounts.scopes import (
    ADMIN,
    ALL_SCOPES,
    BILLING_READ,
    DEPLOYMENTS_TRIGGER,
    ENVIRONMENTS_READ,
    PIPELINES_READ,
    PIPELINES_WRITE,
    PROJECTS_READ,
    PROJECTS_WRITE,
)
from forgeline.errors import Forbidden, Unauthorized
from forgeline.settings import Settings

__all__ = [
    "ADMIN",
    "ALL_SCOPES",
    "BILLING_READ",
    "DEPLOYMENTS_TRIGGER",
    "ENVIRONMENTS_READ",
    "PIPELINES_READ",
    "PIPELINES_WRITE",
    "PROJECTS_READ",
    "PROJECTS_WRITE",
    "Principal",
    "PrincipalDep",
    "SessionDep",
    "SettingsDep",
    "TemporalDep",
    "core_execute",
    "require_scope",
    "require_session_principal",
]


_READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One unit of work per request: committed when the endpoint returns, rolled back when it
    raises (so a failed request writes nothing, audit rows included). GET/HEAD are read-only
    and run without an explicit transaction."""
    async with request.app.state.session_maker() as session:
        try:
            if request.method in _READ_ONLY_METHODS:
                # Reads need no BEGIN/COMMIT round trips: each statement runs in its own
                # implicit transaction (asyncpg autocommit), as a raw asyncpg query would.
                await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": commit before the response is sent, so a failed commit is a failed request.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def core_execute(
    session: AsyncSession, stmt: Executable, params: Mapping[str, Any] | None = None
) -> CursorResult[Any]:
    """Run a Core statement on the request's connection (same transaction as the session),
    skipping the ORM Session.execute path: hot reads pay for neither ORM compile state nor
    identity-map bookkeeping they do not use."""
    connection = await session.connection()
    return await connection.execute(stmt, dict(params) if params is not None else None)


@dataclass(frozen=True)
class Principal:
    """Who is calling, on behalf of which organization, with which effective scopes."""

    organization_id: UUID
    user_id: UUID | None
    api_key_id: UUID | None
    role: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    session_id: UUID | None = None

    @property
    def actor_type(self) -> str:
        return "api_key" if self.api_key_id is not None else "user"

    def has(self, scope: str) -> bool:
        return scope in self.scopes


_bearer = HTTPBearer(auto_error=False, description="An API key (fl_live_...) or a session token")


async def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    from api.accounts.service import authenticate_bearer  # accounts imports this module

    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    if credentials is None or not credentials.credentials:
        raise Unauthorized("Missing bearer token (Authorization: Bearer <API key or session>)")
    principal = await authenticate_bearer(session, request, credentials.credentials.strip())
    request.state.principal = principal
    # Once per authenticated request (the principal is cached above): api_requests metering.
    meter = getattr(request.app.state, "api_meter", None)
    if meter is not None:
        meter.count(principal.organization_id)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that authenticates the caller and demands `scope` (typos fail at import)."""
    if scope not in ALL_SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known: {sorted(ALL_SCOPES)}")

    async def dependency(principal: PrincipalDep) -> Principal:
        if not principal.has(scope):
            raise Forbidden(f"This action needs the {scope!r} scope", required_scope=scope)
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    dependency.required_scope = scope  # type: ignore[attr-defined]  # read by route-table tests
    return dependency


async def require_session_principal(principal: PrincipalDep) -> Principal:
    """For endpoints about the login itself (refresh, logout, TOTP): API keys are refused."""
    if principal.session_id is None or principal.user_id is None:
        raise Forbidden("This endpoint needs a session token, not an API key")
    return principal


SessionPrincipalDep = Annotated[Principal, Depends(require_session_principal)]


async def get_temporal(request: Request) -> Client:
    client: Client = await request.app.state.temporal.get()
    return client


TemporalDep = Annotated[Client, Depends(get_temporal)]


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
