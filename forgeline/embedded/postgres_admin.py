"""The embedded PostgreSQL's SQL-side setup over asyncpg: waiting until it accepts connections,
the move from trust to passwords, its databases and Forgeline's roles in them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import asyncpg

from db.roles import ROLES, ensure_roles, scram_verifier
from db.sql_quoting import quote_ident, quote_literal

# What a connection attempt raises while the server is not (yet) there for us: refused, reset or
# timed out sockets, a server starting up or shutting down, a protocol error on a dying socket.
_NOT_THERE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class WrongPassword(RuntimeError):
    """The server is up and refuses the password it was given."""


@contextlib.asynccontextmanager
async def connection(url: str, *, timeout: float = 10) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url, timeout=timeout)
    try:
        yield conn
    finally:
        await conn.close()


async def wait_accepting(url: str, timeout: float) -> None:
    """Until a connection to `url` succeeds; WrongPassword at once if its password is refused,
    the last connection error once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with connection(url, timeout=2):
                return
        except asyncpg.InvalidPasswordError as exc:
            raise WrongPassword(str(exc)) from exc
        except _NOT_THERE:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def accepts_without_password(url: str) -> bool:
    """Whether `url` (which carries no password) gets in: only the server's rules decide (an
    explicit empty password: no password file or PGPASSWORD is consulted)."""
    try:
        conn = await asyncpg.connect(url, timeout=5, password="")
    except _NOT_THERE:
        return False
    await conn.close()
    return True


async def require_passwords(
    admin_url: str, superuser: str, password: str, write_hba: Callable[[], None]
) -> None:
    """Give the superuser its password (while trust still lets us in), write pg_hba.conf through
    `write_hba`, check the server reads it without errors, and reload."""
    async with connection(admin_url) as conn:
        verifier = quote_literal(scram_verifier(password))
        await conn.execute(f"ALTER ROLE {quote_ident(superuser)} PASSWORD {verifier}")
        write_hba()
        errors = await conn.fetchval(
            "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL"
        )
        if errors != 0:
            raise RuntimeError("pg_hba.conf has errors; see pg_hba_file_rules")
        await conn.execute("SELECT pg_reload_conf()")


async def create_database(admin_url: str, name: str) -> None:
    """The database `name`, unless it exists (also when another caller creates it meanwhile)."""
    async with connection(admin_url) as conn:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return
        # Two creations at once: the loser gets DuplicateDatabase, or the catalog's unique index
        # when both passed the server's own existence check.
        with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            await conn.execute(f"CREATE DATABASE {quote_ident(name)}")


async def drop_database(admin_url: str, name: str) -> None:
    async with connection(admin_url) as conn:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


async def ensure_roles_in(url: str, passwords: dict[str, str | None]) -> None:
    """db/roles.py's roles and grants in the database of `url` (a superuser's)."""
    async with connection(url) as conn:
        await ensure_roles(conn, {role: passwords.get(role) for role in ROLES})
