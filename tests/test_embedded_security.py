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
from typing import Any

import asyncpg
import psycopg
import pytest
from alembic import command
from cryptography.fernet import Fernet
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.runs import projections
from activities.runs.artifacts import UploadedArtifact
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
    with psycopg.connect(_trust_url(server), autocommit=True) as conn:
        conn.execute("CREATE DATABASE forgeline")
    if migrate:
        run_migrations(_trust_url(server, "forgeline"))
        with psycopg.connect(_trust_url(server, "forgeline")) as conn:
            conn.execute(
                "INSERT INTO system_metrics (id, metric_category, metric_name) "
                "VALUES (gen_random_uuid(), 'legacy', 'kept across the upgrade')"
            )
    return server


def _owners(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "SELECT pg_get_userbyid(relowner) FROM pg_class"
        " WHERE relnamespace = 'public'::regnamespace"
        " UNION SELECT pg_get_userbyid(proowner) FROM pg_proc"
        " WHERE pronamespace = 'public'::regnamespace"
        " UNION SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
    ).fetchall()
    return {row[0] for row in rows}


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


def test_every_role_needs_its_password_and_the_server_listens_on_loopback_only(
    postgres: EmbeddedPostgres | None, database_url: str
) -> None:
    assert postgres is not None, "these tests are about the embedded server"
    assert not postgres.accepts_without_password()
    for role in (SUPERUSER, *ROLES):
        for password in (None, "", "wrong", postgres.password(role) + "x", "' OR '1'='1"):
            url = role_url(role, password, postgres.host, postgres.port, "forgeline")
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(url, connect_timeout=5, passfile=os.devnull).close()
        psycopg.connect(postgres.url_for(role), connect_timeout=5).close()
    # The Unix socket (inside the 0700 data dir) asks for the password too.
    socket_url = f"postgresql://{SUPERUSER}@/postgres?host={postgres.data_dir}&port={postgres.port}"
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(socket_url, connect_timeout=5, passfile=os.devnull).close()

    with psycopg.connect(postgres.admin_url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        methods = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules").fetchall()
        assert methods == [("scram-sha-256",)]
        stored = conn.execute(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
            ([SUPERUSER, *ROLES],),
        ).fetchall()
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
def test_the_app_role_cannot_escalate(postgres: EmbeddedPostgres | None, statement: str) -> None:
    assert postgres is not None
    with (
        psycopg.connect(postgres.app_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)
    assert not Path("/tmp/forgeline-pwned").exists()


def test_the_app_role_holds_rows_only(postgres: EmbeddedPostgres | None, database_url: str) -> None:
    assert postgres is not None
    with psycopg.connect(postgres.app_url) as conn:
        attrs = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert attrs == (False, False, False, False, False)
        missing = conn.execute(
            "SELECT c.relname, p.priv FROM pg_class c,"
            " unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE']) AS p(priv)"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
            " AND NOT has_table_privilege(c.oid, p.priv)"
        ).fetchall()
        assert missing == []
        extra = conn.execute(
            "SELECT c.relname, p.priv FROM pg_class c,"
            " unnest(ARRAY['TRUNCATE','REFERENCES','TRIGGER']) AS p(priv)"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'"
            " AND has_table_privilege(c.oid, p.priv)"
        ).fetchall()
        assert extra == []
        refused = conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
            " AND NOT has_function_privilege(oid, 'EXECUTE')"
        ).fetchall()
        assert refused == []


# --------------------------------------------------------------------------- the build role


def test_the_build_role_holds_exactly_its_grants(
    postgres: EmbeddedPostgres | None, database_url: str
) -> None:
    assert postgres is not None
    with psycopg.connect(postgres.superuser_url) as conn:
        rows = conn.execute(
            "SELECT c.relname, p.priv FROM pg_class c, unnest(%s::text[]) AS p(priv)"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S')"
            " AND has_table_privilege(%s, c.oid, p.priv)",
            (list(TABLE_PRIVILEGES), BUILD_ROLE),
        ).fetchall()
        functions = conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
            " AND has_function_privilege(%s, oid, 'EXECUTE')",
            (BUILD_ROLE,),
        ).fetchall()
        schema_create = conn.execute(
            "SELECT has_schema_privilege(%s, 'public', 'CREATE')", (BUILD_ROLE,)
        ).fetchone()
    held: dict[str, set[str]] = {}
    for table, privilege in rows:
        held.setdefault(table, set()).add(privilege)
    assert held == {table: set(privs) for table, privs in BUILD_ROLE_GRANTS.items()}
    assert functions == [] and schema_create == (False,)


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


def test_objects_a_later_migration_creates_are_granted(postgres: EmbeddedPostgres | None) -> None:
    """Default privileges give the app what the migrator creates later; the migration run gives
    the build role back exactly its grants, whatever happened to them in between."""
    assert postgres is not None
    name = f"forgeline_later_{uuid.uuid4().hex[:10]}"
    postgres.create_database(name)
    try:
        migrator = postgres.url_for(MIGRATOR_ROLE, name)
        command.upgrade(alembic_config(migrator), "head")
        with psycopg.connect(migrator, autocommit=True) as conn:
            conn.execute("CREATE TABLE later_feature (id bigserial PRIMARY KEY, note text)")
            conn.execute("CREATE FUNCTION later_answer() RETURNS int LANGUAGE sql AS 'SELECT 42'")
            # Damage the build role's grants: one lost, one too many.
            conn.execute(f"REVOKE ALL ON stage_log_chunks FROM {BUILD_ROLE}")
            conn.execute(f"GRANT SELECT ON users TO {BUILD_ROLE}")
        with psycopg.connect(postgres.url_for(APP_ROLE, name), autocommit=True) as conn:
            conn.execute("INSERT INTO later_feature (note) VALUES ('x')")
            conn.execute("UPDATE later_feature SET note = 'y'")
            assert conn.execute("SELECT later_answer()").fetchone() == (42,)
            conn.execute("DELETE FROM later_feature")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DROP TABLE later_feature")
        with psycopg.connect(postgres.url_for(BUILD_ROLE, name), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM later_feature")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT later_answer()")
        command.upgrade(alembic_config(migrator), "head")  # at head: only the grants run
        with psycopg.connect(postgres.url_for(BUILD_ROLE, name), autocommit=True) as conn:
            conn.execute("SELECT count(*) FROM stage_log_chunks")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT count(*) FROM users")
        # The migrator owns the chain: it downgrades and upgrades without superuser.
        command.downgrade(alembic_config(migrator), "base")
        command.upgrade(alembic_config(migrator), "head")
    finally:
        postgres.drop_database(name)


def test_a_bad_grant_list_is_refused(
    postgres: EmbeddedPostgres | None, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert postgres is not None
    monkeypatch.setitem(BUILD_ROLE_GRANTS, "stage_executions", ("SELECT; DROP TABLE users",))
    with psycopg.connect(postgres.superuser_url) as conn:
        with pytest.raises(ValueError, match="not a table privilege"):
            grant_build_role(conn)
        conn.rollback()
        assert conn.execute("SELECT to_regclass('users') IS NOT NULL").fetchone() == (True,)


# --------------------------------------------------------------------------- ensure_roles


def test_concurrent_ensure_roles_are_harmless(scratch: Path) -> None:
    """Eight calls at once on two databases of one server, the roles absent at first: every call
    succeeds and the roles, passwords and grants come out as one call would leave them."""
    server = EmbeddedPostgres(scratch / "pg", free_port(), server_options=FAST)
    server.start()
    try:
        server.create_database("other")
        run_migrations(server.migrator_url)
        for database in ("forgeline", "other"):
            with psycopg.connect(server.url_for(SUPERUSER, database), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("REASSIGN OWNED BY {} TO {}").format(
                        sql.Identifier(MIGRATOR_ROLE), sql.Identifier(SUPERUSER)
                    )
                )
                for role in ROLES:  # one at a time: their default ACLs share rows
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            for role in ROLES:
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        # Hostile passwords: quotes, SQL, and one the verifier cannot hash locally (non-ASCII).
        passwords: dict[str, str | None] = {
            MIGRATOR_ROLE: server.password(MIGRATOR_ROLE),
            APP_ROLE: "x'; DROP ROLE postgres; --",
            BUILD_ROLE: "pässwörd \"'\\",
        }

        def call(database: str) -> None:
            with psycopg.connect(server.url_for(SUPERUSER, database)) as conn:
                ensure_roles(conn, passwords)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(call, ["forgeline", "other"] * 4))
        with psycopg.connect(server.admin_url) as conn:
            count = conn.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (list(ROLES),)
            ).fetchone()
            assert count == (3,)
            assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'postgres'").fetchone()
        for database in ("forgeline", "other"):
            for role in ROLES:
                url = role_url(role, passwords[role], server.host, server.port, database)
                psycopg.connect(url).close()
            with psycopg.connect(server.url_for(SUPERUSER, database)) as conn:
                assert _owners(conn) == {MIGRATOR_ROLE}
        app = role_url(APP_ROLE, passwords[APP_ROLE], server.host, server.port, "forgeline")
        with psycopg.connect(app) as conn:
            conn.execute("SELECT count(*) FROM users")
    finally:
        server.destroy()


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
            with psycopg.connect(_trust_url(server), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER ROLE postgres PASSWORD {}").format(
                        sql.Literal(server.password(SUPERUSER))
                    )
                )
            server.stop()
        elif case == "crashed-before-reload":
            server._write_hba()  # the new rules on disk, the server still on the old ones
            assert server.hba_is_current() and server.accepts_without_password()

        server.start()

        assert not server.accepts_without_password()
        assert server.hba_is_current()
        with psycopg.connect(server.app_url) as conn:
            kept = conn.execute(
                "SELECT metric_name FROM system_metrics WHERE metric_category = 'legacy'"
            ).fetchall()
            assert kept == [("kept across the upgrade",)]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT rolpassword FROM pg_authid")
        with psycopg.connect(server.superuser_url) as conn:
            assert _owners(conn) == {MIGRATOR_ROLE}
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
