"""What a stolen build credential cannot reach: the embedded PostgreSQL asks every role for its
password on loopback only; the application role holds rows, never DDL or superuser powers; the
build role holds its stage tables only; data dirs from earlier versions (trust, lax modes) are
upgraded in place; the embedded Temporal listens on loopback only."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import pwd
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.runs import stage_records as projections
from core.runs.artifacts import UploadedArtifact
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
from db.sql_quoting import quote_ident, quote_literal
from forgeline.blocking import run_blocking
from forgeline.embedded.data_dir import secure_data_dir
from forgeline.embedded.postgres import (
    PG_HBA,
    SUPERUSER,
    SYSTEM_USER,
    EmbeddedPostgres,
    free_port,
    role_url,
)
from forgeline.embedded.temporal import EmbeddedTemporal
from forgeline.settings import Settings
from forgeline.stack import Stack, run_migrations
from tests.factories import make_org
from tests.runs.helpers import make_pipeline, stage

FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
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


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fl-sec-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _trust_url(server: EmbeddedPostgres, database: str = "postgres") -> str:
    return role_url(SUPERUSER, None, server.host, server.port, database)


def _fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    """One query on a connection of its own, from synchronous test code."""

    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return run_blocking(fetch)


def _execute(url: str, *statements: str) -> None:
    """Statements in order, each its own transaction, on one connection."""

    async def execute() -> None:
        conn = await asyncpg.connect(url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    run_blocking(execute)


async def _password_refused(url: str) -> None:
    """`url` is turned away for its password (an explicit empty one when it carries none: no
    password file or PGPASSWORD is consulted)."""
    with pytest.raises(asyncpg.InvalidPasswordError, match="password"):
        conn = await asyncpg.connect(url, timeout=5, password=make_url(url).password or "")
        await conn.close()


def legacy_trust_server(path: Path, *, migrate: bool = True) -> EmbeddedPostgres:
    """A data dir as earlier versions left it, running: initdb --auth=trust, a superuser without
    a password, the schema migrated by (and owned by) that superuser, one row of data."""
    server = EmbeddedPostgres(path, free_port(), server_options=FAST)
    server.data_dir.mkdir(parents=True)
    server.data_dir.chmod(0o700)
    server._prepare_permissions()
    server._run(
        "initdb", "-D", str(server.data_dir), "-U", SUPERUSER, "--auth=trust", "--locale=C.UTF-8"
    )
    opts = f"-c listen_addresses=127.0.0.1 -c port={server.port} -c unix_socket_directories=''"
    server._run(
        "pg_ctl", "-D", str(server.data_dir), "-l", str(server.log_file), "-o", opts, "-w", "start"
    )
    _execute(_trust_url(server), "CREATE DATABASE forgeline")
    if migrate:
        run_migrations(_trust_url(server, "forgeline"))
        _execute(
            _trust_url(server, "forgeline"),
            "INSERT INTO system_metrics (id, metric_category, metric_name) "
            "VALUES (gen_random_uuid(), 'legacy', 'kept across the upgrade')",
        )
    return server


_OWNERS = (
    "SELECT pg_get_userbyid(relowner) FROM pg_class"
    " WHERE relnamespace = 'public'::regnamespace"
    " UNION SELECT pg_get_userbyid(proowner) FROM pg_proc"
    " WHERE pronamespace = 'public'::regnamespace"
    " UNION SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
)


def _owners(url: str) -> set[str]:
    return {row[0] for row in _fetch(url, _OWNERS)}


def _listening(inodes: set[str] | None = None, port: int | None = None) -> set[str]:
    """Local addresses of listening TCP sockets, by socket inode or by port (/proc/net)."""
    found: set[str] = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != "0A":  # LISTEN
                continue
            if inodes is not None and fields[9] not in inodes:
                continue
            if port is not None and int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, size, 4))
            found.add(str(ipaddress.ip_address(packed)))
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# --------------------------------------------------------------------------- authentication


async def test_every_role_needs_its_password_and_the_server_listens_on_loopback_only(
    postgres: EmbeddedPostgres | None, database_url: str
) -> None:
    assert postgres is not None, "these tests are about the embedded server"
    assert not postgres.accepts_without_password()
    for role in (SUPERUSER, *ROLES):
        for password in (None, "", "wrong", postgres.password(role) + "x", "' OR '1'='1"):
            await _password_refused(
                role_url(role, password, postgres.host, postgres.port, "forgeline")
            )
        conn = await asyncpg.connect(postgres.url_for(role), timeout=5)
        await conn.close()
    # The Unix socket (inside the 0700 data dir) asks for the password too.
    socket_url = f"postgresql://{SUPERUSER}@/postgres?host={postgres.data_dir}&port={postgres.port}"
    await _password_refused(socket_url)

    conn = await asyncpg.connect(postgres.admin_url)
    try:
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        methods = await conn.fetch("SELECT DISTINCT auth_method FROM pg_hba_file_rules")
        assert [tuple(row) for row in methods] == [("scram-sha-256",)]
        stored = await conn.fetch(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1::text[])",
            [SUPERUSER, *ROLES],
        )
    finally:
        await conn.close()
    assert len(stored) == 4 and all(pw.startswith("SCRAM-SHA-256$") for _, pw in stored)
    assert _listening(port=postgres.port) == {"127.0.0.1"}
    assert postgres.hba_file.read_text() == PG_HBA


def test_passwords_are_generated_once_and_kept_private(postgres: EmbeddedPostgres | None) -> None:
    assert postgres is not None
    first = {role: postgres.password(role) for role in (SUPERUSER, *ROLES)}
    assert len(set(first.values())) == 4 and all(len(pw) >= 40 for pw in first.values())
    assert {role: postgres.password(role) for role in first} == first
    assert _mode(postgres.credentials_dir) == 0o700
    for role in first:
        path = postgres.credentials_dir / f"{role}.password"
        assert _mode(path) == 0o600 and path.stat().st_uid == os.geteuid()
    assert _mode(postgres.data_dir) == 0o700
    if os.geteuid() == 0:
        # The server's own user may cross the directory above its data; nobody else may.
        parent = postgres.data_dir.parent
        assert _mode(parent) & 0o007 == 0
        assert parent.stat().st_gid == pwd.getpwnam(SYSTEM_USER).pw_gid


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
            owners = await asyncio.to_thread(_owners, server.url_for(SUPERUSER, database))
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
    before = {row[0] for row in _fetch(postgres.admin_url, "SELECT datname FROM pg_database")}
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: postgres.create_database(name), range(4)))
        rows = _fetch(
            postgres.admin_url,
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            name,
        )
        assert [tuple(row) for row in rows] == [(MIGRATOR_ROLE,)]
        for role in ROLES:
            (row,) = _fetch(postgres.url_for(role, name), "SELECT current_database()")
            assert row[0] == name
    finally:
        postgres.drop_database(name)
        postgres.drop_database(name)
    after = {row[0] for row in _fetch(postgres.admin_url, "SELECT datname FROM pg_database")}
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
        assert (await asyncio.to_thread(_fetch, migrator, tables))[0][0] == 0
        await asyncio.to_thread(command.upgrade, alembic_config(migrator), "head")
        assert (await asyncio.to_thread(_fetch, migrator, tables))[0][0] > 0
        build = postgres.url_for(BUILD_ROLE, name)
        await asyncio.to_thread(_fetch, build, "SELECT count(*) FROM stage_executions")
    finally:
        await asyncio.to_thread(postgres.drop_database, name)


# --------------------------------------------------------------------------- older data dirs

UPGRADE_CASES = ("stopped", "running", "crashed-after-password", "crashed-before-reload")


@pytest.mark.parametrize("case", UPGRADE_CASES)
def test_a_trust_data_dir_is_upgraded_in_place(scratch: Path, case: str) -> None:
    """A data dir from an earlier version (trust, superuser-owned schema) starts with passwords
    required, its data kept and its schema handed to the migrator, including after a crash in
    the middle of an earlier upgrade."""
    server = legacy_trust_server(scratch / "pg")
    try:
        assert server.accepts_without_password()
        if case == "stopped":
            server.stop()
        elif case == "crashed-after-password":
            _execute(
                _trust_url(server),
                f"ALTER ROLE postgres PASSWORD {quote_literal(server.password(SUPERUSER))}",
            )
            server.stop()
        elif case == "crashed-before-reload":
            server._write_hba()  # the new rules on disk, the server still on the old ones
            assert server.hba_is_current() and server.accepts_without_password()

        server.start()

        assert not server.accepts_without_password()
        assert server.hba_is_current()
        kept = _fetch(
            server.app_url,
            "SELECT metric_name FROM system_metrics WHERE metric_category = 'legacy'",
        )
        assert [tuple(row) for row in kept] == [("kept across the upgrade",)]
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            _fetch(server.app_url, "SELECT rolpassword FROM pg_authid")
        assert _owners(server.superuser_url) == {MIGRATOR_ROLE}
        # The migrator takes the chain from there without superuser.
        command.downgrade(alembic_config(server.migrator_url), "-1")
        command.upgrade(alembic_config(server.migrator_url), "head")
        # And the next start changes nothing.
        server.stop()
        server.start()
        assert not server.accepts_without_password()
    finally:
        server.destroy()


def test_a_lost_superuser_password_is_a_clear_error_not_a_way_in(scratch: Path) -> None:
    server = EmbeddedPostgres(scratch / "pg", free_port(), server_options=FAST)
    server.start()
    try:
        server.stop()
        (server.credentials_dir / f"{SUPERUSER}.password").write_text("guessed")
        with pytest.raises(RuntimeError, match="does not match"):
            server.start()
        assert not server.accepts_without_password()
    finally:
        server.destroy()


# --------------------------------------------------------------------------- data dir modes


def _lax_older_data_dir(data: Path) -> None:
    """What an earlier `make run` left: readable by everyone."""
    for directory in (
        "objects/runs/r1/logs",
        "spool",
        "workspaces/run-1",
        "temporal",
        "runner/etc",
    ):
        (data / directory).mkdir(parents=True, exist_ok=True)
    files = {
        "encryption.key": Fernet.generate_key().decode(),
        "bootstrap.json": '{"owner_password": "pw", "api_key": "k"}',
        "objects/runs/r1/logs/build.log": "log",
        "spool/e1.log": "spooled",
        "workspaces/run-1/Makefile": "all:",
        "temporal/temporal.sqlite": "",
        "runner/etc/passwd": "build:x:61000:61000::/workspace:/bin/sh",
    }
    for name, content in files.items():
        (data / name).write_text(content)
        (data / name).chmod(0o644)
    for path in data.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    data.chmod(0o755)
    outside = data.parent / "outside.txt"
    outside.write_text("not ours")
    outside.chmod(0o644)
    (data / "objects" / "link").symlink_to(outside)


def test_secure_data_dir_repairs_an_older_data_dir(scratch: Path) -> None:
    data = scratch / ".data"
    data.mkdir()
    _lax_older_data_dir(data)
    secure_data_dir(data)
    assert _mode(data) == 0o700
    for name in ("encryption.key", "bootstrap.json"):
        assert _mode(data / name) == 0o600
    for tree in ("objects", "spool", "temporal"):
        for path in [data / tree, *(data / tree).rglob("*")]:
            if not path.is_symlink():
                assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert _mode(data / "workspaces") == 0o700
    assert _mode(data / "runner") == 0o700
    # A run's workspace belongs to its build (the sandbox hands it over), and the sandbox's
    # identity files are read inside it by the build user: left as they are.
    assert _mode(data / "workspaces" / "run-1") == 0o755
    assert _mode(data / "runner" / "etc" / "passwd") == 0o644
    # A symlink is not followed out of the data dir.
    assert _mode(scratch / "outside.txt") == 0o644
    secure_data_dir(data)  # idempotent
    assert _mode(data) == 0o700


def test_a_fresh_data_dir_is_private_before_anything_writes_to_it(scratch: Path) -> None:
    data = scratch / "fresh" / ".data"
    secure_data_dir(data)
    assert _mode(data) == 0o700
    for name in ("objects", "spool", "workspaces"):
        assert _mode(data / name) == 0o700


async def test_make_run_secures_the_data_dir_and_hands_out_role_urls(
    scratch: Path, temporal_address: str
) -> None:
    """`make run`'s service start on an older data dir: modes repaired; the API and workers get
    the app role, the build host the build role, nobody the migrator's or superuser's URL."""
    data = scratch / ".data"
    data.mkdir()
    _lax_older_data_dir(data)
    settings = Settings(
        environment="development",
        data_dir=data,
        temporal_address=temporal_address,
        embedded_postgres_port=free_port(),
    )
    stack = Stack(settings)
    stack.env["FORGELINE_MIGRATION_DATABASE_URL"] = "postgresql://forgeline_migrator:pw@h/db"
    try:
        await stack.start_services()
        child = stack.child_settings()
    finally:
        await asyncio.to_thread(stack.stop)
    assert _mode(data) & 0o077 in (0, 0o010)  # the server's group may cross it (root only)
    assert _mode(data / "encryption.key") == 0o600
    assert _mode(data / "bootstrap.json") == 0o600
    assert _mode(data / "objects" / "runs" / "r1" / "logs" / "build.log") == 0o600
    assert _mode(data / "postgres") == 0o700
    creds = data / "postgres-credentials"
    assert _mode(creds) == 0o700
    assert {p.name for p in creds.iterdir()} == {f"{r}.password" for r in (SUPERUSER, *ROLES)}
    assert all(_mode(p) == 0o600 for p in creds.iterdir())

    assert make_url(stack.env["FORGELINE_DATABASE_URL"]).username == APP_ROLE
    assert child.database_url is not None and make_url(child.database_url).username == APP_ROLE
    assert child.build_database_url is not None
    assert make_url(child.build_database_url).username == BUILD_ROLE
    # What the API and control worker inherit: no other role's password, no migrator URL.
    handed_out = " ".join(stack.env.values())
    assert MIGRATOR_ROLE not in handed_out
    for role in (SUPERUSER, MIGRATOR_ROLE, BUILD_ROLE):
        assert (creds / f"{role}.password").read_text() not in handed_out


# --------------------------------------------------------------------------- Temporal


async def test_embedded_temporal_listens_on_loopback_only(scratch: Path) -> None:
    temporal = EmbeddedTemporal(scratch / "temporal", port=free_port(), ui_port=free_port())
    temporal.start()
    try:
        await temporal.wait_ready()
        assert temporal.process is not None
        addresses = _listening(inodes=_socket_inodes(temporal.process.pid))
        # The frontend, the UI, the HTTP API, metrics and the internal services: all of them.
        assert addresses == {"127.0.0.1"}
        assert _listening(port=temporal.port) == {"127.0.0.1"}
        assert temporal.ui_port is not None
        assert _listening(port=temporal.ui_port) == {"127.0.0.1"}
    finally:
        temporal.stop()
