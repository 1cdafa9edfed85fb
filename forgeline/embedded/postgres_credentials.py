"""Where the embedded PostgreSQL's role passwords live (beside its data dir, 0700/0600), and the
URLs built from them."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from urllib.parse import quote


def credentials_dir(data_dir: Path) -> Path:
    """Where the passwords of a server in `data_dir` are kept: beside it, for the service user."""
    data_dir = Path(data_dir).absolute()
    return data_dir.with_name(f"{data_dir.name}-credentials")


def read_password(data_dir: Path, role: str) -> str | None:
    path = credentials_dir(data_dir) / f"{role}.password"
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def ensure_password(directory: Path, role: str) -> str:
    """The role's password in `directory`, generated on first use and kept (0600) from then on."""
    path = directory / f"{role}.password"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        # Written aside and linked into place: two processes starting at once agree on one.
        fd, staged = tempfile.mkstemp(dir=directory, prefix=".new-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
            with contextlib.suppress(FileExistsError):
                os.link(staged, path)
        finally:
            os.unlink(staged)
    return path.read_text().strip()


def role_url(role: str, password: str | None, host: str, port: int, database: str) -> str:
    auth = quote(role, safe="") + (f":{quote(password, safe='')}" if password else "")
    return f"postgresql://{auth}@{host}:{port}/{quote(database, safe='')}"


def embedded_url(data_dir: Path, port: int, role: str, database: str = "forgeline") -> str:
    """The URL of `role` on the embedded server in `data_dir` (its password read from there)."""
    return role_url(role, read_password(data_dir, role), "127.0.0.1", port, database)
