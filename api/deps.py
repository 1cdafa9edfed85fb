"""Request dependencies: the request-scoped DB session, the authenticated Principal and scope
checks, the Temporal client and the settings.

    @router.get("/projects")
    async def list_projects(session: SessionDep, principal: ProjectsReader) -> ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.audit import origin_of
from core.accounts.authentication import authenticate_bearer
from core.accounts.context import AccountContext
from core.accounts.scopes import (
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
from core.audit.origin import Origin
from core.driver import HeldConnection, ReadSource, autocommit_connection, hold_read_connection
from core.principal import Principal
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
    "AccountContextDep",
    "Admin",
    "BillingReader",
    "DeploymentsTrigger",
    "EnvironmentsConnectionReader",
    "EnvironmentsReader",
    "OriginDep",
    "PipelinesReader",
    "PipelinesWriter",
    "Principal",
    "PrincipalDep",
    "ProjectsConnectionReader",
    "ProjectsReader",
    "ProjectsWriter",
    "ReadConnectionDep",
    "SessionDep",
    "SettingsDep",
    "TemporalDep",
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
                connection = await session.connection(
                    execution_options={"isolation_level": "AUTOCOMMIT"}
                )
                await hold_read_connection(session, connection)
                yield session
                # Each statement committed itself; only ORM changes left pending need a flush.
                if session.new or session.dirty or session.deleted:
                    await session.commit()
                return
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": commit before the response is sent, so a failed commit is a failed request.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


_bearer = HTTPBearer(auto_error=False, description="An API key (fl_live_...) or a session token")


async def get_read_connection(request: Request) -> AsyncIterator[HeldConnection]:
    """A hot GET's one autocommit connection, without an AsyncSession: for endpoints that only
    read through core/driver.py statements (their key lookup included)."""
    engine = request.app.state.session_maker.kw["bind"]
    async with autocommit_connection(engine) as connection:
        yield connection


ReadConnectionDep = Annotated[HeldConnection, Depends(get_read_connection, scope="function")]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_principal(request: Request, session: SessionDep, credentials: BearerDep) -> Principal:
    return await _resolve_principal(request, session, credentials)


async def get_read_principal(
    request: Request, connection: ReadConnectionDep, credentials: BearerDep
) -> Principal:
    """The principal of a request served on the bare read connection (no session)."""
    return await _resolve_principal(request, connection, credentials)


async def _resolve_principal(
    request: Request, session: ReadSource, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    if credentials is None or not credentials.credentials:
        raise Unauthorized("Missing bearer token (Authorization: Bearer <API key or session>)")
    principal = await authenticate_bearer(
        session,
        credentials.credentials.strip(),
        rate_limiter=request.app.state.rate_limiter,
        last_used=request.app.state.last_used,
        leases=getattr(request.app.state, "key_leases", None),
    )
    request.state.principal = principal
    # Once per authenticated request (the principal is cached above): api_requests metering.
    meter = getattr(request.app.state, "api_meter", None)
    if meter is not None:
        meter.count(principal.organization_id)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
ReadPrincipalDep = Annotated[Principal, Depends(get_read_principal)]


def require_scope(
    scope: str, *, on_read_connection: bool = False
) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and demands `scope` (typos fail at import);
    `on_read_connection`: authenticated on the request's bare read connection (ReadConnectionDep)
    instead of its session."""
    if scope not in ALL_SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known: {sorted(ALL_SCOPES)}")

    def check(principal: Principal) -> Principal:
        if not principal.has(scope):
            raise Forbidden(f"This action needs the {scope!r} scope", required_scope=scope)
        return principal

    async def on_session(principal: PrincipalDep) -> Principal:
        return check(principal)

    async def on_connection(
        request: Request, connection: ReadConnectionDep, credentials: BearerDep
    ) -> Principal:
        # Flat: the principal resolved here rather than in a dependency of its own (one level
        # of dependency solving less on every hot read).
        return check(await _resolve_principal(request, connection, credentials))

    dependency: Callable[..., Awaitable[Principal]] = (
        on_connection if on_read_connection else on_session
    )

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    dependency.required_scope = scope  # type: ignore[attr-defined]  # read by route-table tests
    return dependency


# The principal of each scope an endpoint can demand: one dependency per scope for every router.
ProjectsReader = Annotated[Principal, Depends(require_scope(PROJECTS_READ))]
ProjectsWriter = Annotated[Principal, Depends(require_scope(PROJECTS_WRITE))]
EnvironmentsReader = Annotated[Principal, Depends(require_scope(ENVIRONMENTS_READ))]
# Hot reads served without a session: the endpoint takes ReadConnectionDep alongside.
ProjectsConnectionReader = Annotated[
    Principal, Depends(require_scope(PROJECTS_READ, on_read_connection=True))
]
EnvironmentsConnectionReader = Annotated[
    Principal, Depends(require_scope(ENVIRONMENTS_READ, on_read_connection=True))
]
PipelinesReader = Annotated[Principal, Depends(require_scope(PIPELINES_READ))]
PipelinesWriter = Annotated[Principal, Depends(require_scope(PIPELINES_WRITE))]
DeploymentsTrigger = Annotated[Principal, Depends(require_scope(DEPLOYMENTS_TRIGGER))]
BillingReader = Annotated[Principal, Depends(require_scope(BILLING_READ))]
Admin = Annotated[Principal, Depends(require_scope(ADMIN))]


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


def get_origin(request: Request) -> Origin:
    return origin_of(request)


OriginDep = Annotated[Origin, Depends(get_origin)]


def get_account_context(request: Request) -> AccountContext:
    """The process's settings, sign-in throttles and mailer, with the request's origin."""
    state = request.app.state
    return AccountContext(
        origin=origin_of(request),
        settings=getattr(state, "settings", None),
        throttles=getattr(state, "auth_throttles", None),
        mailer=getattr(state, "mailer", None),
    )


AccountContextDep = Annotated[AccountContext, Depends(get_account_context)]
