"""`python -m db.roles`, the operator's command against a production server: it sets up a bare
database with the roles and the passwords of the URLs the processes use, and refuses a URL that
names another role."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from alembic import command

from db.regen_migration import alembic_config
from db.roles import APP_ROLE, BUILD_ROLE, MIGRATOR_ROLE, main
from db.sql_quoting import quote_ident
from forgeline.embedded.postgres import SUPERUSER, EmbeddedPostgres

URL_SETTINGS = {
    MIGRATOR_ROLE: "FORGELINE_MIGRATION_DATABASE_URL",
    APP_ROLE: "FORGELINE_DATABASE_URL",
    BUILD_ROLE: "FORGELINE_BUILD_DATABASE_URL",
}


async def _admin(postgres: EmbeddedPostgres, statement: str) -> None:
    conn = await asyncpg.connect(postgres.admin_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def test_the_command_sets_up_a_bare_database(
    postgres: EmbeddedPostgres | None, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert postgres is not None, "needs the embedded server's superuser"
    name = f"forgeline_ops_{uuid.uuid4().hex[:10]}"
    # A bare database as a managed server hands it out: the admin's, no Forgeline grants.
    await _admin(postgres, f"CREATE DATABASE {quote_ident(name)}")
    try:
        for role, setting in URL_SETTINGS.items():
            monkeypatch.setenv(setting, postgres.url_for(role, name))
        # An operator may paste a SQLAlchemy URL of any driver.
        admin = postgres.url_for(SUPERUSER, name).replace("postgresql://", "postgresql+psycopg://")
        await asyncio.to_thread(main, ["--admin-url", admin])
        # Twice at once changes nothing more.
        await asyncio.gather(*(asyncio.to_thread(main, ["--admin-url", admin]) for _ in range(2)))

        conn = await asyncpg.connect(postgres.url_for(MIGRATOR_ROLE, name))
        try:
            owner = await conn.fetchval(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", name
            )
            assert owner == MIGRATOR_ROLE
        finally:
            await conn.close()
        migrator = postgres.url_for(MIGRATOR_ROLE, name)
        await asyncio.to_thread(command.upgrade, alembic_config(migrator), "head")
        for role, table, allowed in (
            (APP_ROLE, "users", True),
            (BUILD_ROLE, "stage_executions", True),
            (BUILD_ROLE, "users", False),
        ):
            conn = await asyncpg.connect(postgres.url_for(role, name))
            try:
                if allowed:
                    await conn.fetchval(f"SELECT count(*) FROM {table}")
                else:
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.fetchval(f"SELECT count(*) FROM {table}")
            finally:
                await conn.close()
    finally:
        await _admin(postgres, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


@pytest.mark.parametrize("role", sorted(URL_SETTINGS))
def test_a_url_naming_another_role_is_refused(
    postgres: EmbeddedPostgres | None, monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    assert postgres is not None
    monkeypatch.setenv(URL_SETTINGS[role], postgres.url_for(SUPERUSER))
    with pytest.raises(SystemExit, match=f"must connect as '{role}'"):
        main(["--admin-url", postgres.superuser_url])
