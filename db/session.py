"""One async engine and session maker per process; commit happens at the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import asyncpg
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from forgeline.settings import Settings


def async_database_url(url: str) -> str:
    """Normalise any postgres URL to the asyncpg driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def sync_database_url(url: str) -> str:
    """The psycopg (sync) form of the same URL, for Alembic and admin tasks."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return f"postgresql://postgres@127.0.0.1:{settings.embedded_postgres_port}/forgeline"


def create_engine(settings: Settings, *, url: str | None = None) -> AsyncEngine:
    return create_async_engine(
        async_database_url(url or database_url(settings)),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
    )


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
        yield cast(asyncpg.Connection, raw.driver_connection)
