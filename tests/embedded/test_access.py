"""Who can connect at all: the embedded PostgreSQL asks every role for its password on loopback
only, the passwords are generated once and kept private, the embedded Temporal listens on
loopback only."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import asyncpg

from db.roles import (
    ROLES,
)
from forgeline.embedded.postgres import (
    PG_HBA,
    SUPERUSER,
    SYSTEM_USER,
    EmbeddedPostgres,
    free_port,
    role_url,
)
from forgeline.embedded.temporal import EmbeddedTemporal
from tests.embedded.support import (
    file_mode,
    listening_addresses,
    password_refused,
    socket_inodes,
)

# --------------------------------------------------------------------------- authentication


async def test_every_role_needs_its_password_and_the_server_listens_on_loopback_only(
    postgres: EmbeddedPostgres | None, database_url: str
) -> None:
    assert postgres is not None, "these tests are about the embedded server"
    assert not postgres.accepts_without_password()
    for role in (SUPERUSER, *ROLES):
        for password in (None, "", "wrong", postgres.password(role) + "x", "' OR '1'='1"):
            await password_refused(
                role_url(role, password, postgres.host, postgres.port, "forgeline")
            )
        conn = await asyncpg.connect(postgres.url_for(role), timeout=5)
        await conn.close()
    # The Unix socket (inside the 0700 data dir) asks for the password too.
    socket_url = f"postgresql://{SUPERUSER}@/postgres?host={postgres.data_dir}&port={postgres.port}"
    await password_refused(socket_url)

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
    assert listening_addresses(port=postgres.port) == {"127.0.0.1"}
    assert postgres.hba_file.read_text() == PG_HBA


def test_passwords_are_generated_once_and_kept_private(postgres: EmbeddedPostgres | None) -> None:
    assert postgres is not None
    first = {role: postgres.password(role) for role in (SUPERUSER, *ROLES)}
    assert len(set(first.values())) == 4 and all(len(pw) >= 40 for pw in first.values())
    assert {role: postgres.password(role) for role in first} == first
    assert file_mode(postgres.credentials_dir) == 0o700
    for role in first:
        path = postgres.credentials_dir / f"{role}.password"
        assert file_mode(path) == 0o600 and path.stat().st_uid == os.geteuid()
    assert file_mode(postgres.data_dir) == 0o700
    if os.geteuid() == 0:
        # The server's own user may cross the directory above its data; nobody else may.
        parent = postgres.data_dir.parent
        assert file_mode(parent) & 0o007 == 0
        assert parent.stat().st_gid == pwd.getpwnam(SYSTEM_USER).pw_gid


# --------------------------------------------------------------------------- Temporal


async def test_embedded_temporal_listens_on_loopback_only(scratch: Path) -> None:
    temporal = EmbeddedTemporal(scratch / "temporal", port=free_port(), ui_port=free_port())
    temporal.start()
    try:
        await temporal.wait_ready()
        assert temporal.process is not None
        addresses = listening_addresses(inodes=socket_inodes(temporal.process.pid))
        # The frontend, the UI, the HTTP API, metrics and the internal services: all of them.
        assert addresses == {"127.0.0.1"}
        assert listening_addresses(port=temporal.port) == {"127.0.0.1"}
        assert temporal.ui_port is not None
        assert listening_addresses(port=temporal.ui_port) == {"127.0.0.1"}
    finally:
        temporal.stop()
