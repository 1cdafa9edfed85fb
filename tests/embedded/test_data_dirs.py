"""Data dirs from earlier versions (trust authentication, lax modes) are upgraded in place, and
`make run` keeps the data dir private and hands each process only its own role's URL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from db.regen_migration import alembic_config
from db.roles import (
    APP_ROLE,
    BUILD_ROLE,
    MIGRATOR_ROLE,
    ROLES,
)
from db.sql_quoting import quote_literal
from forgeline.embedded.data_dir import secure_data_dir
from forgeline.embedded.postgres import (
    SUPERUSER,
    EmbeddedPostgres,
    free_port,
)
from forgeline.settings import Settings
from forgeline.stack import Stack
from tests.embedded.support import (
    FAST,
    execute_statements,
    fetch_rows,
    file_mode,
    legacy_trust_server,
    schema_owners,
    trust_url,
)

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
            execute_statements(
                trust_url(server),
                f"ALTER ROLE postgres PASSWORD {quote_literal(server.password(SUPERUSER))}",
            )
            server.stop()
        elif case == "crashed-before-reload":
            server._write_hba()  # the new rules on disk, the server still on the old ones
            assert server.hba_is_current() and server.accepts_without_password()

        server.start()

        assert not server.accepts_without_password()
        assert server.hba_is_current()
        kept = fetch_rows(
            server.app_url,
            "SELECT metric_name FROM system_metrics WHERE metric_category = 'legacy'",
        )
        assert [tuple(row) for row in kept] == [("kept across the upgrade",)]
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            fetch_rows(server.app_url, "SELECT rolpassword FROM pg_authid")
        assert schema_owners(server.superuser_url) == {MIGRATOR_ROLE}
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
    assert file_mode(data) == 0o700
    for name in ("encryption.key", "bootstrap.json"):
        assert file_mode(data / name) == 0o600
    for tree in ("objects", "spool", "temporal"):
        for path in [data / tree, *(data / tree).rglob("*")]:
            if not path.is_symlink():
                assert file_mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert file_mode(data / "workspaces") == 0o700
    assert file_mode(data / "runner") == 0o700
    # A run's workspace belongs to its build (the sandbox hands it over), and the sandbox's
    # identity files are read inside it by the build user: left as they are.
    assert file_mode(data / "workspaces" / "run-1") == 0o755
    assert file_mode(data / "runner" / "etc" / "passwd") == 0o644
    # A symlink is not followed out of the data dir.
    assert file_mode(scratch / "outside.txt") == 0o644
    secure_data_dir(data)  # idempotent
    assert file_mode(data) == 0o700


def test_a_fresh_data_dir_is_private_before_anything_writes_to_it(scratch: Path) -> None:
    data = scratch / "fresh" / ".data"
    secure_data_dir(data)
    assert file_mode(data) == 0o700
    for name in ("objects", "spool", "workspaces"):
        assert file_mode(data / name) == 0o700


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
    assert file_mode(data) & 0o077 in (0, 0o010)  # the server's group may cross it (root only)
    assert file_mode(data / "encryption.key") == 0o600
    assert file_mode(data / "bootstrap.json") == 0o600
    assert file_mode(data / "objects" / "runs" / "r1" / "logs" / "build.log") == 0o600
    assert file_mode(data / "postgres") == 0o700
    creds = data / "postgres-credentials"
    assert file_mode(creds) == 0o700
    assert {p.name for p in creds.iterdir()} == {f"{r}.password" for r in (SUPERUSER, *ROLES)}
    assert all(file_mode(p) == 0o600 for p in creds.iterdir())

    assert make_url(stack.env["FORGELINE_DATABASE_URL"]).username == APP_ROLE
    assert child.database_url is not None and make_url(child.database_url).username == APP_ROLE
    assert child.build_database_url is not None
    assert make_url(child.build_database_url).username == BUILD_ROLE
    # What the API and control worker inherit: no other role's password, no migrator URL.
    handed_out = " ".join(stack.env.values())
    assert MIGRATOR_ROLE not in handed_out
    for role in (SUPERUSER, MIGRATOR_ROLE, BUILD_ROLE):
        assert (creds / f"{role}.password").read_text() not in handed_out
