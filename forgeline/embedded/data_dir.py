"""The data directory of the embedded stack: who may read what (the service user alone holds keys,
passwords, tenants' objects and workspaces) and the development keys kept in it."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet

from forgeline.payload_codec import development_payload_key
from forgeline.settings import PLACEHOLDER, Settings


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


# What the data dir holds for the service user alone: keys, passwords, the bootstrap owner's
# credentials, every tenant's objects, logs and workspaces, the embedded services' state.
# Whole trees: what only the service user's processes write.
PRIVATE_TREES = ("objects", "spool", "temporal", "postgres-credentials", "caddy")
# Made before any process writes there, so nothing is ever created in a readable directory.
PRECREATED = ("objects", "spool", "workspaces")
# The server's own (initdb makes it 0700 for its system user).
SERVER_OWNED = ("postgres",)


def secure_data_dir(data_dir: Path) -> None:
    """Directories 0700 and files 0600 for the service user; repairs an older, laxer data dir.

    Whole trees for what only the service user's processes write; any other directory
    (`workspaces`, `runner`) at its top only: the build sandbox hands the insides to the build
    user. Symlinks are never followed.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    _restrict(data_dir, 0o700)
    for name in PRECREATED:
        (data_dir / name).mkdir(mode=0o700, exist_ok=True)
    for entry in data_dir.iterdir():
        if entry.is_symlink() or entry.name in SERVER_OWNED:
            continue
        if entry.is_file():
            _restrict(entry, 0o600)
        elif entry.name in PRIVATE_TREES:
            for root, dirs, files in os.walk(entry):
                _restrict(Path(root), 0o700)
                for name in files:
                    _restrict(Path(root) / name, 0o600)
                dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
        else:
            _restrict(entry, 0o700)


def _restrict(path: Path, ceiling: int) -> None:
    """Clear every permission bit beyond `ceiling` (group and other), keeping the owner's."""
    with contextlib.suppress(FileNotFoundError):
        info = path.lstat()
        mode = stat.S_IMODE(info.st_mode)
        # A symlink's target may be anywhere (chmod would follow it): never changed from here.
        if mode & ~ceiling and not stat.S_ISLNK(info.st_mode):
            path.chmod(mode & ceiling)


def development_encryption_key(settings: Settings) -> str | None:
    """In development with the placeholder key, one generated key kept in the data dir."""
    if settings.encryption_keys.get_secret_value() not in ("", PLACEHOLDER):
        return None
    key_file = settings.data_dir / "encryption.key"
    if not key_file.exists():
        write_private(key_file, Fernet.generate_key().decode())
    return key_file.read_text().strip()


def development_payload_key_env(settings: Settings) -> str | None:
    """In development without FORGELINE_PAYLOAD_KEYS, the key kept in the data dir."""
    if settings.payload_keys is not None:
        return None
    return development_payload_key(settings.data_dir.absolute())
