"""Alembic environment: sync psycopg engine against the Forgeline database, all models loaded."""

from __future__ import annotations

from logging.config import fileConfig

import psycopg
from alembic import context
from sqlalchemy import Connection, create_engine, pool

import db.models  # noqa: F401  (registers every table on Base.metadata)
from db.base import Base
from db.roles import grant_build_role
from db.session import migration_database_url, sync_database_url
from forgeline.settings import get_settings

config = context.config

# Programmatic callers (tests, regen) pass their own Config without a logging section.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    x_url = context.get_x_argument(as_dictionary=True).get("url")
    if x_url:
        return sync_database_url(x_url)
    configured = config.get_main_option("sqlalchemy.url")
    if configured:
        return sync_database_url(configured)
    return sync_database_url(migration_database_url(get_settings()))


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


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        # A caller (e.g. a test) handed us an open connection: reuse it.
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
            _grant_build_role(conn)
    engine.dispose()


def _grant_build_role(conn: Connection) -> None:
    """Tables a migration created get the build role's grants (the migrator owns them)."""
    raw = conn.connection.driver_connection
    if isinstance(raw, psycopg.Connection):
        grant_build_role(raw)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
