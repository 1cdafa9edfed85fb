"""Alembic environment: an asyncpg engine against the Forgeline database, all models loaded."""

from __future__ import annotations

from logging.config import fileConfig

import asyncpg
from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import create_async_engine

import db.models  # noqa: F401  (registers every table on Base.metadata)
from db.base import Base
from db.roles import grant_build_role
from db.session import async_database_url, migration_database_url
from forgeline.blocking import run_blocking
from forgeline.settings import get_settings

config = context.config

# Programmatic callers (tests, regen) pass their own Config without a logging section.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    x_url = context.get_x_argument(as_dictionary=True).get("url")
    configured = config.get_main_option("sqlalchemy.url")
    return async_database_url(x_url or configured or migration_database_url(get_settings()))


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    """The migrations and the build role's grants in one transaction: tables a migration created
    get their grants (the migrator owns them), or neither happens."""
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    try:
        # The transaction is begun here, so Alembic leaves the commit to us (after the grants).
        async with engine.connect() as conn, conn.begin():
            await conn.run_sync(do_run_migrations)
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            if isinstance(driver, asyncpg.Connection):
                await grant_build_role(driver)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # A caller (e.g. a test) handed us an open connection: reuse it.
        do_run_migrations(connection)
        return
    run_blocking(run_async_migrations)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
