"""Shared arrange code for the embedded-services security tests: one-off queries on a role's
connection, a data dir as earlier versions left it, and what /proc says about listening sockets."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from forgeline.blocking import run_blocking
from forgeline.embedded.postgres import (
    SUPERUSER,
    EmbeddedPostgres,
    free_port,
    role_url,
)
from forgeline.stack import run_migrations

FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def trust_url(server: EmbeddedPostgres, database: str = "postgres") -> str:
    return role_url(SUPERUSER, None, server.host, server.port, database)


def fetch_rows(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    """One query on a connection of its own, from synchronous test code."""

    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return run_blocking(fetch)


def execute_statements(url: str, *statements: str) -> None:
    """Statements in order, each its own transaction, on one connection."""

    async def execute() -> None:
        conn = await asyncpg.connect(url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    run_blocking(execute)


async def password_refused(url: str) -> None:
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
    execute_statements(trust_url(server), "CREATE DATABASE forgeline")
    if migrate:
        run_migrations(trust_url(server, "forgeline"))
        execute_statements(
            trust_url(server, "forgeline"),
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


def schema_owners(url: str) -> set[str]:
    return {row[0] for row in fetch_rows(url, _OWNERS)}


def listening_addresses(inodes: set[str] | None = None, port: int | None = None) -> set[str]:
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


def socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)
