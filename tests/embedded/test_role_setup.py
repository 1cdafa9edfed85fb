"""How the roles and their grants are set up: objects a later migration creates are granted, a bad
grant list or a failed grant leaves nothing half done, concurrent set-ups and hostile database
names are harmless."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from alembic import command

from db.regen_migration import alembic_config
from db.roles import (
    APP_ROLE,
    BUILD_ROLE,
    BUILD_ROLE_GRANTS,
    MIGRATOR_ROLE,
    ROLES,
    ensure_roles,
    grant_build_role,
)
from db.sql_quoting import quote_ident
from forgeline.embedded.postgres import (
    SUPERUSER,
    EmbeddedPostgres,
    free_port,
    role_url,
)
from forgeline.stack import run_migrations
from tests.embedded.support import (
    FAST,
    fetch_rows,
    schema_owners,
)

# --------------------------------------------------------------------------- later migrations


async def test_objects_a_later_migration_creates_are_granted(
    postgres: EmbeddedPostgres | None,
) -> None:
    """Default privileges give the app what the migrator creates later; the migration run gives
    the build role back exactly its grants, whatever happened to them in between."""
    assert postgres is not None
    name = f"forgeline_later_{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(postgres.create_database, name)
    try:
        migrator = postgres.url_for(MIGRATOR_ROLE, name)
        await asyncio.to_thread(command.upgrade, alembic_config(migrator), "head")
        conn = await asyncpg.connect(migrator)
        try:
            await conn.execute("CREATE TABLE later_feature (id bigserial PRIMARY KEY, note text)")
            await conn.execute(
                "CREATE FUNCTION later_answer() RETURNS int LANGUAGE sql AS 'SELECT 42'"
            )
            # Damage the build role's grants: one lost, one too many.
            await conn.execute(f"REVOKE ALL ON stage_log_chunks FROM {BUILD_ROLE}")
            await conn.execute(f"GRANT SELECT ON users TO {BUILD_ROLE}")
        finally:
            await conn.close()
        conn = await asyncpg.connect(postgres.url_for(APP_ROLE, name))
        try:
            await conn.execute("INSERT INTO later_feature (note) VALUES ('x')")
            await conn.execute("UPDATE later_feature SET note = 'y'")
            assert await conn.fetchval("SELECT later_answer()") == 42
            await conn.execute("DELETE FROM later_feature")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DROP TABLE later_feature")
        finally:
            await conn.close()
        conn = await asyncpg.connect(postgres.url_for(BUILD_ROLE, name))
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("SELECT * FROM later_feature")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("SELECT later_answer()")
        finally:
            await conn.close()
        # At head: only the grants run.
        await asyncio.to_thread(command.upgrade, alembic_config(migrator), "head")
        conn = await asyncpg.connect(postgres.url_for(BUILD_ROLE, name))
        try:
            await conn.execute("SELECT count(*) FROM stage_log_chunks")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("SELECT count(*) FROM users")
        finally:
            await conn.close()
        # The migrator owns the chain: it downgrades and upgrades without superuser.
        await asyncio.to_thread(command.downgrade, alembic_config(migrator), "base")
        await asyncio.to_thread(command.upgrade, alembic_config(migrator), "head")
    finally:
        await asyncio.to_thread(postgres.drop_database, name)


async def test_a_bad_grant_list_is_refused(
    postgres: EmbeddedPostgres | None, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert postgres is not None
    monkeypatch.setitem(BUILD_ROLE_GRANTS, "stage_executions", ("SELECT; DROP TABLE users",))
    conn = await asyncpg.connect(postgres.superuser_url)
    try:
        # In a transaction rolled back on the error: the revokes before it leave no trace.
        with pytest.raises(ValueError, match="not a table privilege"):
            async with conn.transaction():
                await grant_build_role(conn)
        assert await conn.fetchval("SELECT to_regclass('users') IS NOT NULL") is True
    finally:
        await conn.close()


# --------------------------------------------------------------------------- ensure_roles


async def _drop_roles(server: EmbeddedPostgres, databases: tuple[str, ...]) -> None:
    """The three roles gone from the server, their objects handed to the superuser."""
    for database in databases:
        conn = await asyncpg.connect(server.url_for(SUPERUSER, database))
        try:
            await conn.execute(
                f"REASSIGN OWNED BY {quote_ident(MIGRATOR_ROLE)} TO {quote_ident(SUPERUSER)}"
            )
            for role in ROLES:  # one at a time: their default ACLs share rows
                await conn.execute(f"DROP OWNED BY {quote_ident(role)}")
        finally:
            await conn.close()
    conn = await asyncpg.connect(server.admin_url)
    try:
        for role in ROLES:
            await conn.execute(f"DROP ROLE {quote_ident(role)}")
    finally:
        await conn.close()


async def test_concurrent_ensure_roles_are_harmless(scratch: Path) -> None:
    """Eight calls at once on two databases of one server, the roles absent at first: every call
    succeeds and the roles, passwords and grants come out as one call would leave them."""
    server = EmbeddedPostgres(scratch / "pg", free_port(), server_options=FAST)
    await asyncio.to_thread(server.start)
    try:
        await asyncio.to_thread(server.create_database, "other")
        await asyncio.to_thread(run_migrations, server.migrator_url)
        await _drop_roles(server, ("forgeline", "other"))
        # Hostile passwords: quotes, SQL, and one the verifier cannot hash locally (non-ASCII).
        passwords: dict[str, str | None] = {
            MIGRATOR_ROLE: server.password(MIGRATOR_ROLE),
            APP_ROLE: "x'; DROP ROLE postgres; --",
            BUILD_ROLE: "pässwörd \"'\\",
        }

        async def call(database: str) -> None:
            conn = await asyncpg.connect(server.url_for(SUPERUSER, database))
            try:
                await ensure_roles(conn, passwords)
            finally:
                await conn.close()

        await asyncio.gather(*(call(database) for database in ["forgeline", "other"] * 4))
        conn = await asyncpg.connect(server.admin_url)
        try:
            count = await conn.fetchval(
                "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1::text[])", list(ROLES)
            )
            assert count == 3
            assert await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'postgres'")
        finally:
            await conn.close()
        for database in ("forgeline", "other"):
            for role in ROLES:
                url = role_url(role, passwords[role], server.host, server.port, database)
                await (await asyncpg.connect(url)).close()
            owners = await asyncio.to_thread(schema_owners, server.url_for(SUPERUSER, database))
            assert owners == {MIGRATOR_ROLE}
        app = role_url(APP_ROLE, passwords[APP_ROLE], server.host, server.port, "forgeline")
        conn = await asyncpg.connect(app)
        try:
            await conn.fetchval("SELECT count(*) FROM users")
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(server.destroy)


HOSTILE_DATABASES = (
    'we"ird; DROP DATABASE forgeline; --',
    "it's\\back\\slashed",
    "Ünïcode base/with?url#syntax",
)


@pytest.mark.parametrize("name", HOSTILE_DATABASES)
def test_a_hostile_database_name_is_created_set_up_and_dropped_as_given(
    postgres: EmbeddedPostgres | None, database_url: str, name: str
) -> None:
    """Four creations of one hostile name at once: each succeeds, one database exists with
    exactly that name, owned by the migrator, reachable by each role; dropping it twice is
    harmless and leaves every other database in place."""
    assert postgres is not None
    before = {row[0] for row in fetch_rows(postgres.admin_url, "SELECT datname FROM pg_database")}
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: postgres.create_database(name), range(4)))
        rows = fetch_rows(
            postgres.admin_url,
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            name,
        )
        assert [tuple(row) for row in rows] == [(MIGRATOR_ROLE,)]
        for role in ROLES:
            (row,) = fetch_rows(postgres.url_for(role, name), "SELECT current_database()")
            assert row[0] == name
    finally:
        postgres.drop_database(name)
        postgres.drop_database(name)
    after = {row[0] for row in fetch_rows(postgres.admin_url, "SELECT datname FROM pg_database")}
    assert after == before


async def test_a_migration_run_whose_grants_fail_leaves_nothing_half_done(
    postgres: EmbeddedPostgres | None, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The migrations and the build role's grants commit together: when the grants fail after
    every migration ran, the database is as empty as before, and the next run does it all."""
    assert postgres is not None
    name = f"forgeline_atomic_{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(postgres.create_database, name)
    try:
        migrator = postgres.url_for(MIGRATOR_ROLE, name)
        tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        with monkeypatch.context() as patch:
            patch.setitem(BUILD_ROLE_GRANTS, "stage_executions", ("SELECT; DROP TABLE users",))
            with pytest.raises(ValueError, match="not a table privilege"):
                await asyncio.to_thread(command.upgrade, alembic_config(migrator), "head")
        assert (await asyncio.to_thread(fetch_rows, migrator, tables))[0][0] == 0
        await asyncio.to_thread(command.upgrade, alembic_config(migrator), "head")
        assert (await asyncio.to_thread(fetch_rows, migrator, tables))[0][0] > 0
        build = postgres.url_for(BUILD_ROLE, name)
        await asyncio.to_thread(fetch_rows, build, "SELECT count(*) FROM stage_executions")
    finally:
        await asyncio.to_thread(postgres.drop_database, name)
