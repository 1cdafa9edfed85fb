"""Forgeline's database roles and every grant they hold, in one place.

- `forgeline_migrator` owns the database, its schema and every object in it; Alembic runs as it.
- `forgeline_app` (API, control workers): rows only (SELECT/INSERT/UPDATE/DELETE), no DDL.
- `forgeline_build` (build hosts, which run hostile code): the stage tables in BUILD_ROLE_GRANTS.

`ensure_roles` creates or repairs them idempotently; the embedded server calls it at every start,
an operator runs it once against a production server (`python -m db.roles`, see the README).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import secrets
import sys
from collections.abc import Mapping

import asyncpg
from sqlalchemy.engine import make_url

from db.sql_quoting import quote_ident, quote_literal, quote_qualified

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


def _password_literal(password: str) -> str:
    if password.isascii():
        return quote_literal(scram_verifier(password))
    return quote_literal(password)  # the server hashes it (with SASLprep)


async def ensure_roles(conn: asyncpg.Connection, passwords: Mapping[str, str | None]) -> None:
    """Create or repair the roles, hand the database and its objects to the migrator, and grant.

    `conn` is an admin's connection (superuser, or CREATEROLE and owner of the database) to the
    target database, outside any transaction; `passwords` maps role names to a password to set
    (None or absent: keep). Safe to run any number of times, also concurrently.
    """
    for attempt in range(_RETRIES):
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
                await _ensure_role_rows(conn, passwords)
                await _ensure_database_and_schema(conn)
                await _adopt_objects(conn)
                await _grant_existing(conn)
                await grant_build_role(conn)
            return
        except (
            asyncpg.DuplicateObjectError,
            asyncpg.UniqueViolationError,
            asyncpg.DeadlockDetectedError,
        ):
            pass  # a session on another database changed the same role rows first
        except asyncpg.InternalServerError as exc:
            if "concurrently" not in str(exc):
                raise
        await asyncio.sleep(0.05 * (attempt + 1))
    raise RuntimeError("could not set up the database roles: too many concurrent changes")


async def _ensure_role_rows(conn: asyncpg.Connection, passwords: Mapping[str, str | None]) -> None:
    columns = ", ".join(_ROLE_ATTRIBUTES)
    for role in ROLES:
        row = await conn.fetchrow(
            f"SELECT rolcanlogin, {columns} FROM pg_roles WHERE rolname = $1",  # noqa: S608
            role,
        )
        password = passwords.get(role)
        if row is None:
            statement = (
                f"CREATE ROLE {quote_ident(role)} LOGIN {' '.join(_ROLE_ATTRIBUTES.values())}"
            )
        else:
            held = tuple(row)
            wrong = [
                off for has, off in zip(held[1:], _ROLE_ATTRIBUTES.values(), strict=True) if has
            ]
            if not held[0]:
                wrong.append("LOGIN")
            if not wrong and password is None:
                continue
            statement = f"ALTER ROLE {quote_ident(role)} {' '.join(wrong)}"
        if password is not None:
            statement = f"{statement} PASSWORD {_password_literal(password)}"
        await conn.execute(statement)
    if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        # A CREATEROLE admin (a managed server's) must act as the migrator to hand objects over.
        await conn.execute(f"GRANT {quote_ident(MIGRATOR_ROLE)} TO CURRENT_USER")


async def _ensure_database_and_schema(conn: asyncpg.Connection) -> None:
    migrator, app, build = (quote_ident(role) for role in ROLES)
    database = quote_ident(await conn.fetchval("SELECT current_database()"))
    schema = quote_ident(SCHEMA)
    db_owner = await conn.fetchval(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
    )
    if db_owner != MIGRATOR_ROLE:
        await conn.execute(f"ALTER DATABASE {database} OWNER TO {migrator}")
    schema_owner = await conn.fetchval(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", SCHEMA
    )
    if schema_owner not in (MIGRATOR_ROLE, "pg_database_owner"):
        await conn.execute(f"ALTER SCHEMA {schema} OWNER TO {migrator}")
    for statement in (
        "REVOKE ALL ON DATABASE {database} FROM PUBLIC",
        "GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {app}",
        "GRANT CONNECT ON DATABASE {database} TO {build}",
        # Before PostgreSQL 15 every role may create objects in public: nobody but the owner.
        "REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC",
        "GRANT USAGE ON SCHEMA {schema} TO {app}, {build}",
    ):
        await conn.execute(statement.format(database=database, schema=schema, app=app, build=build))


# Objects of the schema the migrator does not own yet (a database migrated by a superuser before
# the roles existed), extensions' own objects left alone. Tables before sequences: a table's owned
# sequences follow it. Parameters: $1 schema, $2 owner (, $3 relation kinds).
_FOREIGN_RELATIONS = """
SELECT c.relkind::text, c.oid::regclass::text FROM pg_class c
WHERE c.relnamespace = $1::regnamespace AND c.relkind::text = ANY($3::text[])
  AND c.relowner <> $2::regrole
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
"""
_FOREIGN_ROUTINES = """
SELECT p.oid::regprocedure::text FROM pg_proc p
WHERE p.pronamespace = $1::regnamespace AND p.proowner <> $2::regrole
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
"""
_FOREIGN_TYPES = """
SELECT t.oid::regtype::text FROM pg_type t
LEFT JOIN pg_class c ON c.oid = t.typrelid
WHERE t.typnamespace = $1::regnamespace AND t.typowner <> $2::regrole
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


async def _adopt_objects(conn: asyncpg.Connection) -> None:
    migrator = quote_ident(MIGRATOR_ROLE)
    # The names below come from the server's reg* casts, already quoted where they need to be.
    for kinds in (["r", "p", "v", "m", "f"], ["S"]):
        for kind, name in await conn.fetch(_FOREIGN_RELATIONS, SCHEMA, MIGRATOR_ROLE, kinds):
            await conn.execute(f"ALTER {_ALTER_RELATION[kind]} {name} OWNER TO {migrator}")
    for (signature,) in await conn.fetch(_FOREIGN_ROUTINES, SCHEMA, MIGRATOR_ROLE):
        await conn.execute(f"ALTER ROUTINE {signature} OWNER TO {migrator}")
    for (type_name,) in await conn.fetch(_FOREIGN_TYPES, SCHEMA, MIGRATOR_ROLE):
        await conn.execute(f"ALTER TYPE {type_name} OWNER TO {migrator}")


async def _grant_existing(conn: asyncpg.Connection) -> None:
    """The app's rows on today's objects, and the same on everything the migrator creates later."""
    names = {
        "migrator": quote_ident(MIGRATOR_ROLE),
        "app": quote_ident(APP_ROLE),
        "schema": quote_ident(SCHEMA),
        "tables": ", ".join(APP_TABLE_PRIVILEGES),
        "sequences": ", ".join(APP_SEQUENCE_PRIVILEGES),
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
        await conn.execute(statement.format(**names))


async def grant_build_role(conn: asyncpg.Connection) -> None:
    """Exactly BUILD_ROLE_GRANTS on the tables that exist: whatever else the role held is revoked.

    Run by `ensure_roles` and, as the migrator (the tables' owner), after every migration, so a
    table a migration creates gets its grant. Does nothing where the build role does not exist.
    """
    if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", BUILD_ROLE) is None:
        return
    build = quote_ident(BUILD_ROLE)
    owned = {
        name
        for (name,) in await conn.fetch(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = $1::regnamespace"
            " AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
            " AND pg_has_role(current_user, c.relowner, 'USAGE')",
            SCHEMA,
        )
    }
    for name in sorted(owned):
        await conn.execute(f"REVOKE ALL ON {quote_qualified(SCHEMA, name)} FROM {build}")
    for table, privileges in BUILD_ROLE_GRANTS.items():
        unknown = set(privileges) - _TABLE_PRIVILEGES
        if unknown:
            raise ValueError(f"BUILD_ROLE_GRANTS[{table!r}]: not a table privilege: {unknown}")
        if table not in owned:
            continue  # not migrated yet: granted after the migration that creates it
        await conn.execute(
            f"GRANT {', '.join(privileges)} ON {quote_qualified(SCHEMA, table)} TO {build}"
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
    asyncio.run(_ensure_roles_at(admin.render_as_string(hide_password=False), passwords))
    print(f"roles ready in {admin.database}: {', '.join(ROLES)}", file=sys.stderr)


async def _ensure_roles_at(dsn: str, passwords: Mapping[str, str | None]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await ensure_roles(conn, passwords)
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
