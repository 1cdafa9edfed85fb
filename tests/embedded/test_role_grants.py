"""What a stolen credential cannot reach inside the database: the application role holds rows,
never DDL or superuser powers; the build role holds its stage tables only."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.runs import stage_records as projections
from core.runs.artifacts import UploadedArtifact
from db.roles import (
    APP_ROLE,
    BUILD_ROLE,
    BUILD_ROLE_GRANTS,
    MIGRATOR_ROLE,
)
from forgeline.embedded.postgres import (
    SUPERUSER,
    EmbeddedPostgres,
)
from tests.factories import make_org
from tests.runs.helpers import make_pipeline, stage

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
# Tables a build must never read: identities, credentials, tenants, secrets and their carriers.
FORBIDDEN_TO_BUILDS = (
    "users",
    "api_keys",
    "sessions",
    "password_reset_tokens",
    "organizations",
    "organization_members",
    "projects",
    "environments",
    "git_provider_connections",
    "payment_methods",
    "webhook_payloads",
    "deployments",
    "audit_logs",
)

# --------------------------------------------------------------------------- the app role

APP_REFUSED = {
    "create a role": "CREATE ROLE intruder LOGIN SUPERUSER",
    "make itself superuser": f"ALTER ROLE {APP_ROLE} SUPERUSER",
    "join the migrator": f"GRANT {MIGRATOR_ROLE} TO {APP_ROLE}",
    "become the migrator": f"SET ROLE {MIGRATOR_ROLE}",
    "become the superuser": f"SET ROLE {SUPERUSER}",
    "read password hashes": "SELECT rolpassword FROM pg_authid",
    "change the server's configuration": "ALTER SYSTEM SET listen_addresses = '*'",
    "run a shell command": "COPY (SELECT 1) TO PROGRAM 'id > /tmp/forgeline-pwned'",
    "read a server file": "SELECT pg_read_file('/etc/passwd')",
    "write a server file": "COPY (SELECT 1) TO '/tmp/forgeline-pwned'",
    "create a table": "CREATE TABLE intruder (id int)",
    "create a function": "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "create a trusted extension": "CREATE EXTENSION hstore",
    "create a schema": "CREATE SCHEMA intruder",
    "create a database": "CREATE DATABASE intruder",
    "drop a table": "DROP TABLE users",
    "alter a table": "ALTER TABLE users ADD COLUMN intruder int",
    "truncate a table": "TRUNCATE audit_logs",
    "disable triggers": "SET session_replication_role = replica",
}


@pytest.mark.parametrize("statement", APP_REFUSED.values(), ids=list(APP_REFUSED))
async def test_the_app_role_cannot_escalate(
    postgres: EmbeddedPostgres | None, statement: str
) -> None:
    assert postgres is not None
    conn = await asyncpg.connect(postgres.app_url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    finally:
        await conn.close()
    assert not Path("/tmp/forgeline-pwned").exists()


async def test_the_app_role_holds_rows_only(
    postgres: EmbeddedPostgres | None, database_url: str
) -> None:
    assert postgres is not None
    conn = await asyncpg.connect(postgres.app_url)
    try:
        attrs = await conn.fetchrow(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname = current_user"
        )
        assert attrs is not None and tuple(attrs) == (False, False, False, False, False)
        missing = await conn.fetch(
            "SELECT c.relname, p.priv FROM pg_class c,"
            " unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE']) AS p(priv)"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
            " AND NOT has_table_privilege(c.oid, p.priv)"
        )
        assert missing == []
        extra = await conn.fetch(
            "SELECT c.relname, p.priv FROM pg_class c,"
            " unnest(ARRAY['TRUNCATE','REFERENCES','TRIGGER']) AS p(priv)"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
            " AND has_table_privilege(c.oid, p.priv)"
        )
        assert extra == []
        refused = await conn.fetch(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
            " AND NOT has_function_privilege(oid, 'EXECUTE')"
        )
        assert refused == []
    finally:
        await conn.close()


# --------------------------------------------------------------------------- the build role


async def test_the_build_role_holds_exactly_its_grants(
    postgres: EmbeddedPostgres | None, database_url: str
) -> None:
    assert postgres is not None
    conn = await asyncpg.connect(postgres.superuser_url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, p.priv FROM pg_class c, unnest($1::text[]) AS p(priv)"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S')"
            " AND has_table_privilege($2, c.oid, p.priv)",
            list(TABLE_PRIVILEGES),
            BUILD_ROLE,
        )
        functions = await conn.fetch(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
            " AND has_function_privilege($1, oid, 'EXECUTE')",
            BUILD_ROLE,
        )
        schema_create = await conn.fetchval(
            "SELECT has_schema_privilege($1, 'public', 'CREATE')", BUILD_ROLE
        )
    finally:
        await conn.close()
    held: dict[str, set[str]] = {}
    for table, privilege in rows:
        held.setdefault(table, set()).add(privilege)
    assert held == {table: set(privs) for table, privs in BUILD_ROLE_GRANTS.items()}
    assert functions == [] and schema_create is False


@pytest.mark.parametrize("table", FORBIDDEN_TO_BUILDS)
async def test_the_build_role_cannot_read_identities_secrets_or_tenants(
    postgres: EmbeddedPostgres | None, database_url: str, table: str
) -> None:
    assert postgres is not None
    conn = await asyncpg.connect(postgres.build_url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch(f"SELECT * FROM {table} LIMIT 1")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"DELETE FROM {table}")
    finally:
        await conn.close()


async def test_a_build_host_writes_its_attempt_through_the_build_role_and_nothing_more(
    postgres: EmbeddedPostgres | None,
    database_url: str,
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    """The build host's own statements (open, log chunk, close with artifacts, a replayed
    attempt) pass as the build role; anything beside them is refused."""
    assert postgres is not None
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("build", "true")])
    run_id = uuid.uuid4()
    async with session_maker() as session:
        project_id = (
            await session.execute(
                text("SELECT project_id FROM pipelines WHERE id = :id"), {"id": pipeline_id}
            )
        ).scalar_one()
        await session.execute(
            text(
                "INSERT INTO pipeline_runs (id, pipeline_id, project_id, run_number)"
                " VALUES (:id, :pipeline, :project, 1)"
            ),
            {"id": run_id, "pipeline": pipeline_id, "project": project_id},
        )
        await session.commit()

    conn = await asyncpg.connect(postgres.build_url)
    try:
        # The second time a replayed attempt: its earlier chunks (0..2) go, its log restarts.
        for chunk_count in (3, 1):
            opened = await projections.open_attempt(
                conn,
                run_id=str(run_id),
                stage_name="build",
                attempt=1,
                stage_id=None,
                runner="sandbox",
                container_name=f"fl-{run_id}",
            )
            assert opened is not None
            execution_id = opened.execution_id
            for seq in range(chunk_count):
                await projections.store_log_chunk(
                    conn,
                    execution_id=execution_id,
                    seq=seq,
                    first_line=seq,
                    line_count=1,
                    content="compiling\n",
                )
        key = f"runs/{run_id}/artifacts/build/1/app.tar"
        await projections.close_attempt(
            conn,
            run_id=str(run_id),
            execution_id=execution_id,
            attempt=1,
            closed=projections.ClosedAttempt(
                status="success",
                exit_code=0,
                duration_ms=12,
                log_size_bytes=10,
                log_line_count=1,
                final_chunk=(1, 1, 1, "done\n"),
                artifacts=[UploadedArtifact("app.tar", key, 3, "ab" * 32, None)],
            ),
        )
        # An attempt of a run that does not exist: refused by the foreign key, not by a read.
        missing = await projections.open_attempt(
            conn,
            run_id=str(uuid.uuid4()),
            stage_name="build",
            attempt=1,
            stage_id=None,
            runner="sandbox",
            container_name="x",
        )
        assert missing is None
        for statement in (
            "SELECT status FROM pipeline_runs",
            "SELECT config FROM projects",
            "SELECT config FROM environments",
            "UPDATE pipeline_runs SET status = 'succeeded'",
            "INSERT INTO pipeline_runs (pipeline_id, project_id, run_number)"
            " SELECT pipeline_id, project_id, 99 FROM pipeline_runs LIMIT 1",
            "DELETE FROM stage_executions",
            "DELETE FROM artifacts",
            "TRUNCATE stage_log_chunks",
            "SELECT * FROM v_active_workflows",
            "SELECT build_slot_release('x', 'y')",
            "CREATE TABLE intruder (id int)",
            "CREATE TEMP TABLE intruder (id int)",
        ):
            with pytest.raises(
                (asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedFunctionError)
            ):
                await conn.execute(statement)
    finally:
        await conn.close()
    async with session_maker() as session:
        chunks = (
            await session.execute(
                text(
                    "SELECT seq, content FROM stage_log_chunks WHERE stage_execution_id = :id"
                    " ORDER BY seq"
                ),
                {"id": execution_id},
            )
        ).all()
        status = (
            await session.execute(
                text("SELECT status FROM pipeline_runs WHERE id = :id"), {"id": run_id}
            )
        ).scalar_one()
    assert [tuple(c) for c in chunks] == [(0, "compiling\n"), (1, "done\n")]
    assert status == "queued"
