"""One async engine and session maker per process; commit happens at the edge."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from forgeline.settings import Settings


def async_database_url(url: str) -> str:
    """Any PostgreSQL URL (bare, another driver's, `postgres://`) for SQLAlchemy's asyncpg
    dialect; any other database's URL unchanged."""
    return _with_driver(url, "postgresql+asyncpg")


def driver_dsn(url: str) -> str:
    """The same PostgreSQL URL without a SQLAlchemy driver name: what `asyncpg.connect` takes."""
    return _with_driver(url, "postgresql")


def _with_driver(url: str, drivername: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        return url
    return parsed.set(drivername=drivername).render_as_string(hide_password=False)


def database_url(settings: Settings) -> str:
    """The application's URL: DATABASE_URL, else the embedded server's app role (no DDL)."""
    if settings.database_url:
        return settings.database_url
    return _embedded_url(settings, "forgeline_app")


def migration_database_url(settings: Settings) -> str:
    """The schema owner's URL, for Alembic: FORGELINE_MIGRATION_DATABASE_URL, else DATABASE_URL,
    else the embedded server's migrator role."""
    if settings.migration_database_url:
        return settings.migration_database_url
    if settings.database_url:
        return settings.database_url
    return _embedded_url(settings, "forgeline_migrator")


def _embedded_url(settings: Settings, role: str) -> str:
    from forgeline.embedded.postgres_credentials import embedded_url

    data_dir = settings.data_dir.absolute() / "postgres"
    return embedded_url(data_dir, settings.embedded_postgres_port, role)


# A pooled connection used this recently is handed out without a ping first.
PING_AFTER_IDLE_SECONDS = 1.0


def create_engine(settings: Settings, *, url: str | None = None) -> AsyncEngine:
    engine = create_async_engine(
        async_database_url(url or database_url(settings)),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    ping_idle_connections(engine)
    return engine


def ping_idle_connections(engine: AsyncEngine) -> None:
    """Pessimistic disconnect handling for connections that sat idle in the pool.

    Like `pool_pre_ping`, a dead connection (database restarted) is replaced before use, but only
    connections idle for more than PING_AFTER_IDLE_SECONDS are pinged: a ping is a round trip
    (~0.3 ms), and the hot paths (a stage's opening and closing statements, a run's bookkeeping)
    check a connection out again within milliseconds.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return  # new, or used a moment ago
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # The pool discards the connection and checks out another (a new one if need be).
            raise DisconnectionError("pooled connection is dead") from exc


# SQLSTATEs of a server that cannot serve now: connection exceptions (class 08), too many
# clients, and the operator-intervention codes of a shutdown, a crash and a start-up.
_UNAVAILABLE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) says the database is unreachable or going away rather than
    that a statement was wrong: worth retrying later on a new connection, never a bug."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, DBAPIError):
            if error.connection_invalidated:
                return True
            pending.append(error.orig)
        if isinstance(error, PoolTimeout):  # every pooled connection busy (or hanging)
            return True
        if isinstance(error, ConnectionError):  # refused, reset, broken pipe
            return True
        if (
            isinstance(error, asyncpg.InterfaceError)
            and "connection" in str(error)
            and ("closed" in str(error) or "lost" in str(error))
        ):
            return True
        sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        pending.extend((error.__cause__, error.__context__))
    return False


def create_session_maker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def session_scope(
    session_maker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A unit of work: commit on success, roll back on any error."""
    async with session_maker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


@asynccontextmanager
async def driver_connection(
    session_maker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection as the asyncpg connection itself, outside any transaction.

    For hot single statements (each its own implicit transaction, no BEGIN/COMMIT round trips);
    the pool still checks the connection out and resets it on return as usual.
    """
    engine: AsyncEngine = session_maker.kw["bind"]
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = cast(asyncpg.Connection, raw.driver_connection)
        try:
            yield driver
        except BaseException as exc:
            # Errors of the driver itself bypass SQLAlchemy's disconnect detection: a connection
            # the server dropped would go back to the pool and fail the next user too.
            if database_unavailable(exc) or driver.is_closed():
                await conn.invalidate(exc if isinstance(exc, Exception) else None)
            raise
