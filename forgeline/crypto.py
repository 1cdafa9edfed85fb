"""Encryption at rest for tokens and secrets: MultiFernet over FORGELINE_ENCRYPTION_KEYS.

Keys are comma-separated, newest first: the first encrypts, all decrypt. Rotating means
prepending a new key, running `forgeline rotate-keys`, then dropping the old key.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from functools import lru_cache
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from forgeline.settings import PLACEHOLDER, Settings, get_settings

if TYPE_CHECKING:
    pass

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
