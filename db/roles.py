"""Forgeline's database roles and every grant they hold, in one place.

- `forgeline_migrator` owns the database, its schema and every object in it; Alembic runs as it.
- `forgeline_app` (API, control workers): rows only (SELECT/INSERT/UPDATE/DELETE), no DDL.
- `forgeline_build` (build hosts, which run hostile code): the stage tables in BUILD_ROLE_GRANTS.

`ensure_roles` creates or repairs them idempotently; the embedded server calls it at every start,
an operator runs it once against a production server (`python -m db.roles`, see the README).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import secrets
import sys
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

MIGRATOR_ROLE = "forgeline_migrator"
APP_ROLE = "forgeline_app"
BUILD_ROLE = "forgeline_build"
ROLES = (MIGRATOR_ROLE, APP_ROLE, BUILD_ROLE)
SCHEMA = "public"

APP_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
APP_SEQUENCE_PRIVILEGES = ("USAGE", "SELECT")

# What a build host may touch: its stage attempts (rows, log chunks, artifacts). A replayed
# attempt restarts its log and a log moved to the object store leaves no chunks behind, hence
# DELETE on the chunks. No other table: not runs (an attempt of a missing run is refused by the
# foreign key, which needs no read), users, keys, variables, secrets, projects or organizations.
BUILD_ROLE_GRANTS: dict[str, tuple[str, ...]] = {
    "stage_executions": ("SELECT", "INSERT", "UPDATE"),
    "stage_log_chunks": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "artifacts": ("SELECT", "INSERT", "UPDATE"),
}

_TABLE_PRIVILEGES = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
# Attributes none of the three roles may have (a superuser admin can repair them).
_ROLE_ATTRIBUTES = {
    "rolsuper": "NOSUPERUSER",
    "rolcreatedb": "NOCREATEDB",
    "rolcreaterole": "NOCREATEROLE",
    "rolreplication": "NOREPLICATION",
    "rolbypassrls": "NOBYPASSRLS",
}
# Two calls at once on one database queue on this lock; on two databases of one server they may
# still collide on the shared role rows, and then the loser retries.
_LOCK_KEY = 0x466F7267  # "Forg"
_RETRIES = 8


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores, computed here: the plain password never
    reaches the server (nor its statement log). ASCII passwords only (no SASLprep here)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _password_literal(password: str) -> sql.Composable:
    if password.isascii():
        return sql.Literal(scram_verifier(password))
    return sql.Literal(password)  # the server hashes it (with SASLprep)


def ensure_roles(conn: psycopg.Connection[Any], passwords: Mapping[str, str | None]) -> None:
    """Create or repair the roles, hand the database and its objects to the migrator, and grant.

    `conn` is an admin's connection (superuser, or CREATEROLE and owner of the database) to the
    target database; `passwords` maps role names to a password to set (None or absent: keep).
    Safe to run any number of times, also concurrently.
    """
    for attempt in range(_RETRIES):
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                _ensure_role_rows(conn, passwords)
                _ensure_database_and_schema(conn)
                _adopt_objects(conn)
                _grant_existing(conn)
                grant_build_role(conn)
            return
        except (
            psycopg.errors.DuplicateObject,
            psycopg.errors.UniqueViolation,
            psycopg.errors.DeadlockDetected,
        ):
            pass  # a session on another database changed the same role rows first
        except psycopg.errors.InternalError_ as exc:
            if "concurrently" not in str(exc):
                raise
        time.sleep(0.05 * (attempt + 1))
    raise RuntimeError("could not set up the database roles: too many concurrent changes")


def _ensure_role_rows(conn: psycopg.Connection[Any], passwords: Mapping[str, str | None]) -> None:
    columns = ", ".join(_ROLE_ATTRIBUTES)
    for role in ROLES:
        row = conn.execute(
            f"SELECT rolcanlogin, {columns} FROM pg_roles WHERE rolname = %s",  # noqa: S608
            (role,),
        ).fetchone()
        password = passwords.get(role)
        if row is None:
            statement = sql.SQL("CREATE ROLE {} LOGIN {}").format(
                sql.Identifier(role), sql.SQL(" ".join(_ROLE_ATTRIBUTES.values()))
            )
        else:
            wrong = [
                off for held, off in zip(row[1:], _ROLE_ATTRIBUTES.values(), strict=True) if held
            ]
            if not row[0]:
                wrong.append("LOGIN")
            if not wrong and password is None:
                continue
            statement = sql.SQL("ALTER ROLE {} {}").format(
                sql.Identifier(role), sql.SQL(" ".join(wrong))
            )
        if password is not None:
            statement = sql.SQL("{} PASSWORD {}").format(statement, _password_literal(password))
        conn.execute(statement)
    superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    if superuser.fetchone() != (True,):
        # A CREATEROLE admin (a managed server's) must act as the migrator to hand objects over.
        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(MIGRATOR_ROLE)))


def _ensure_database_and_schema(conn: psycopg.Connection[Any]) -> None:
    migrator, app, build = (sql.Identifier(role) for role in ROLES)
    database = sql.Identifier(conn.info.dbname)
    schema = sql.Identifier(SCHEMA)
    db_owner = conn.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    if db_owner != (MIGRATOR_ROLE,):
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, migrator))
    schema_owner = conn.execute(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s", (SCHEMA,)
    ).fetchone()
    if schema_owner not in ((MIGRATOR_ROLE,), ("pg_database_owner",)):
        conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, migrator))
    for statement in (
        "REVOKE ALL ON DATABASE {database} FROM PUBLIC",
        "GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {app}",
        "GRANT CONNECT ON DATABASE {database} TO {build}",
        # Before PostgreSQL 15 every role may create objects in public: nobody but the owner.
        "REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC",
        "GRANT USAGE ON SCHEMA {schema} TO {app}, {build}",
    ):
        conn.execute(
            sql.SQL(statement).format(database=database, schema=schema, app=app, build=build)
        )


# Objects of the schema the migrator does not own yet (a database migrated by a superuser before
# the roles existed), extensions' own objects left alone. Tables before sequences: a table's owned
# sequences follow it.
_FOREIGN_RELATIONS = """
SELECT c.relkind, c.oid::regclass::text FROM pg_class c
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind = ANY(%(kinds)s)
  AND c.relowner <> %(owner)s::regrole
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
"""
_FOREIGN_ROUTINES = """
SELECT p.oid::regprocedure::text FROM pg_proc p
WHERE p.pronamespace = %(schema)s::regnamespace AND p.proowner <> %(owner)s::regrole
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
"""
_FOREIGN_TYPES = """
SELECT t.oid::regtype::text FROM pg_type t
LEFT JOIN pg_class c ON c.oid = t.typrelid
WHERE t.typnamespace = %(schema)s::regnamespace AND t.typowner <> %(owner)s::regrole
  AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND c.relkind = 'c'))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                  AND d.objid = t.oid AND d.deptype = 'e')
"""
_ALTER_RELATION = {
    "r": "TABLE",
    "p": "TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "f": "FOREIGN TABLE",
    "S": "SEQUENCE",
}


def _adopt_objects(conn: psycopg.Connection[Any]) -> None:
    params: dict[str, Any] = {"schema": SCHEMA, "owner": MIGRATOR_ROLE}
    migrator = sql.Identifier(MIGRATOR_ROLE)
    for kinds in (["r", "p", "v", "m", "f"], ["S"]):
        for kind, name in conn.execute(_FOREIGN_RELATIONS, {**params, "kinds": kinds}).fetchall():
            # regclass text is already quoted where it needs to be.
            conn.execute(
                sql.SQL("ALTER {} {} OWNER TO {}").format(
                    sql.SQL(_ALTER_RELATION[kind]), sql.SQL(name), migrator
                )
            )
    for (signature,) in conn.execute(_FOREIGN_ROUTINES, params).fetchall():
        conn.execute(sql.SQL("ALTER ROUTINE {} OWNER TO {}").format(sql.SQL(signature), migrator))
    for (type_name,) in conn.execute(_FOREIGN_TYPES, params).fetchall():
        conn.execute(sql.SQL("ALTER TYPE {} OWNER TO {}").format(sql.SQL(type_name), migrator))


def _grant_existing(conn: psycopg.Connection[Any]) -> None:
    """The app's rows on today's objects, and the same on everything the migrator creates later."""
    names = {
        "migrator": sql.Identifier(MIGRATOR_ROLE),
        "app": sql.Identifier(APP_ROLE),
        "schema": sql.Identifier(SCHEMA),
        "tables": sql.SQL(", ".join(APP_TABLE_PRIVILEGES)),
        "sequences": sql.SQL(", ".join(APP_SEQUENCE_PRIVILEGES)),
    }
    for statement in (
        "GRANT {tables} ON ALL TABLES IN SCHEMA {schema} TO {app}",
        "GRANT {sequences} ON ALL SEQUENCES IN SCHEMA {schema} TO {app}",
        # Functions: the app's, not every role's (PostgreSQL grants EXECUTE to PUBLIC by default).
        "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} FROM PUBLIC",
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO {app}",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA {schema} "
        "GRANT {tables} ON TABLES TO {app}",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA {schema} "
        "GRANT {sequences} ON SEQUENCES TO {app}",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
        "ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA {schema} "
        "GRANT EXECUTE ON FUNCTIONS TO {app}",
    ):
        conn.execute(sql.SQL(statement).format(**names))


def grant_build_role(conn: psycopg.Connection[Any]) -> None:
    """Exactly BUILD_ROLE_GRANTS on the tables that exist: whatever else the role held is revoked.

    Run by `ensure_roles` and, as the migrator (the tables' owner), after every migration, so a
    table a migration creates gets its grant. Does nothing where the build role does not exist.
    """
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (BUILD_ROLE,)).fetchone()
    if exists is None:
        return
    build = sql.Identifier(BUILD_ROLE)
    owned = {
        name
        for (name,) in conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = %s::regnamespace"
            " AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
            " AND pg_has_role(current_user, c.relowner, 'USAGE')",
            (SCHEMA,),
        ).fetchall()
    }
    for name in sorted(owned):
        conn.execute(
            sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(SCHEMA, name), build)
        )
    for table, privileges in BUILD_ROLE_GRANTS.items():
        unknown = set(privileges) - _TABLE_PRIVILEGES
        if unknown:
            raise ValueError(f"BUILD_ROLE_GRANTS[{table!r}]: not a table privilege: {unknown}")
        if table not in owned:
            continue  # not migrated yet: granted after the migration that creates it
        conn.execute(
            sql.SQL("GRANT {} ON {} TO {}").format(
                sql.SQL(", ".join(privileges)), sql.Identifier(SCHEMA, table), build
            )
        )


# --------------------------------------------------------------------------- operator command


def _role_password(url: str | None, role: str, setting: str) -> str | None:
    if not url:
        return None
    parsed = make_url(url)
    if parsed.username != role:
        raise SystemExit(f"{setting} must connect as {role!r}, not {parsed.username!r}")
    return parsed.password


def main(argv: list[str] | None = None) -> None:
    from forgeline.settings import Settings

    parser = argparse.ArgumentParser(
        prog="python -m db.roles",
        description="Create or repair Forgeline's database roles and grants (idempotent). "
        "Passwords are taken from the URLs the processes use: FORGELINE_MIGRATION_DATABASE_URL "
        f"({MIGRATOR_ROLE}), DATABASE_URL ({APP_ROLE}) and FORGELINE_BUILD_DATABASE_URL "
        f"({BUILD_ROLE}); a role whose URL is unset keeps its password.",
    )
    parser.add_argument(
        "--admin-url",
        required=True,
        help="an admin's URL to the Forgeline database (superuser, or CREATEROLE and its owner)",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    passwords = {
        MIGRATOR_ROLE: _role_password(
            settings.migration_database_url, MIGRATOR_ROLE, "FORGELINE_MIGRATION_DATABASE_URL"
        ),
        APP_ROLE: _role_password(settings.database_url, APP_ROLE, "DATABASE_URL"),
        BUILD_ROLE: _role_password(
            settings.build_database_url, BUILD_ROLE, "FORGELINE_BUILD_DATABASE_URL"
        ),
    }
    admin = make_url(args.admin_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False)) as conn:
        ensure_roles(conn, passwords)
    print(f"roles ready in {admin.database}: {', '.join(ROLES)}", file=sys.stderr)


if __name__ == "__main__":
    main()
