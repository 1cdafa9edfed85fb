"""Encryption at rest for tokens and secrets: MultiFernet over FORGELINE_ENCRYPTION_KEYS.

Keys are comma-separated, newest first: the first encrypts, all decrypt. Rotating means
prepending a new key, running `forgeline rotate-keys`, then dropping the old key.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Collection
from functools import lru_cache
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from forgeline.settings import PLACEHOLDER, Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

logger = logging.getLogger("forgeline.crypto")


class DecryptionFailed(Exception):
    """A ciphertext was not produced by any configured key (or was tampered with)."""


def _development_key() -> bytes:
    # Only reachable in development (Settings refuses the placeholder elsewhere): a fixed,
    # public key so the embedded demo works out of the box. Never protects real secrets.
    return base64.urlsafe_b64encode(hashlib.sha256(b"forgeline-development-only").digest())


def build_fernet(raw_keys: str, *, environment: str = "development") -> MultiFernet:
    keys = [k.strip() for k in raw_keys.split(",") if k.strip()]
    if not keys or keys == [PLACEHOLDER]:
        if environment != "development":
            raise ValueError("FORGELINE_ENCRYPTION_KEYS is not set")
        logger.warning("using the public development encryption key; set FORGELINE_ENCRYPTION_KEYS")
        return MultiFernet([Fernet(_development_key())])
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ValueError(
            "FORGELINE_ENCRYPTION_KEYS must be url-safe base64 32-byte Fernet keys "
            "(generate with `python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`)"
        ) from exc


@lru_cache(maxsize=8)
def _cached_fernet(raw_keys: str, environment: str) -> MultiFernet:
    return build_fernet(raw_keys, environment=environment)


def fernet_for(settings: Settings | None = None) -> MultiFernet:
    settings = settings or get_settings()
    return _cached_fernet(settings.encryption_keys.get_secret_value(), settings.environment)


def encrypt_str(plaintext: str, settings: Settings | None = None) -> str:
    return fernet_for(settings).encrypt(plaintext.encode()).decode()


def decrypt_str(ciphertext: str, settings: Settings | None = None) -> str:
    try:
        return fernet_for(settings).decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionFailed("ciphertext does not decrypt with any configured key") from exc


def rotate_str(ciphertext: str, settings: Settings | None = None) -> str:
    """Re-encrypt under the newest key (decrypts with any configured key)."""
    try:
        return fernet_for(settings).rotate(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionFailed("ciphertext does not decrypt with any configured key") from exc


def encrypted_columns() -> list[tuple[str, list[str]]]:
    """Every `*_encrypted` column of the model, by table: the convention marks them all."""
    import db.models  # noqa: F401  # registers every table on Base.metadata
    from db.base import Base

    found = []
    for table in Base.metadata.sorted_tables:
        columns = [c.name for c in table.columns if c.name.endswith("_encrypted")]
        if columns:
            found.append((table.name, columns))
    return found


async def rotate_encrypted_columns(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings | None = None,
    *,
    batch_size: int = 500,
    tables: Collection[str] | None = None,
) -> dict[str, int]:
    """Re-encrypt every encrypted value under the newest key, batch by batch (keyset on id,
    one commit per batch), and return the number of rewritten values per `table.column`."""
    from sqlalchemy import column, select, table, update

    fernet = fernet_for(settings)
    counts: dict[str, int] = {}
    for table_name, column_names in encrypted_columns():
        if tables is not None and table_name not in tables:
            continue
        tbl = table(table_name, column("id"), *(column(name) for name in column_names))
        for name in column_names:
            counts[f"{table_name}.{name}"] = 0
        last_id = None
        while True:
            stmt = select(tbl.c.id, *(tbl.c[name] for name in column_names)).order_by(tbl.c.id)
            if last_id is not None:
                stmt = stmt.where(tbl.c.id > last_id)
            async with session_maker() as session:
                rows = (await session.execute(stmt.limit(batch_size))).all()
                if not rows:
                    break
                for row in rows:
                    values: dict[str, str] = {}
                    for index, name in enumerate(column_names, start=1):
                        ciphertext = row[index]
                        if ciphertext:
                            try:
                                values[name] = fernet.rotate(ciphertext.encode()).decode()
                            except InvalidToken as exc:
                                raise DecryptionFailed(
                                    f"{table_name}.{name} of row {row[0]} does not decrypt with "
                                    "any configured key; add the old key and run again"
                                ) from exc
                    if values:
                        await session.execute(
                            update(tbl).where(tbl.c.id == row[0]).values(**values)
                        )
                        for name in values:
                            counts[f"{table_name}.{name}"] += 1
                await session.commit()
                last_id = rows[-1][0]
    return counts
