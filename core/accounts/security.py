"""Credential primitives: Argon2id passwords, API key format/checksum, opaque tokens, TOTP.

API keys look like `fl_live_<30 base62 random chars><6 base62 chars of CRC32>` (GitHub's token
scheme): the checksum lets us reject typos and forgeries before touching the database, and the
fixed prefix makes leaked keys easy to find with secret scanners.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

API_KEY_PREFIX = "fl_live_"
SESSION_TOKEN_PREFIX = "fls_"
RESET_TOKEN_PREFIX = "flr_"
_BASE62 = string.digits + string.ascii_letters
_RANDOM_LEN = 30
_CHECKSUM_LEN = 6
API_KEY_LENGTH = len(API_KEY_PREFIX) + _RANDOM_LEN + _CHECKSUM_LEN
# Stored in clear next to the hash: enough to find the row and show the key in listings.
DISPLAY_PREFIX_LENGTH = len(API_KEY_PREFIX) + 8

_hasher = PasswordHasher()  # argon2-cffi defaults: Argon2id, RFC 9106 low-memory profile
# Verified against when the email is unknown, so login time does not reveal which emails exist.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(_BASE62[rem])
    return "".join(reversed(digits))


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode()), _CHECKSUM_LEN)


@dataclass(frozen=True)
class NewApiKey:
    raw: str
    prefix: str
    hash: str


def generate_api_key() -> NewApiKey:
    random_part = "".join(secrets.choice(_BASE62) for _ in range(_RANDOM_LEN))
    raw = API_KEY_PREFIX + random_part + _checksum(random_part)
    return NewApiKey(raw=raw, prefix=raw[:DISPLAY_PREFIX_LENGTH], hash=sha256_hex(raw))


def api_key_well_formed(raw: str) -> bool:
    """Format and checksum only; no database access."""
    if len(raw) != API_KEY_LENGTH or not raw.startswith(API_KEY_PREFIX):
        return False
    body = raw[len(API_KEY_PREFIX) :]
    if any(ch not in _BASE62 for ch in body):
        return False
    random_part, checksum = body[:_RANDOM_LEN], body[_RANDOM_LEN:]
    return hmac.compare_digest(_checksum(random_part), checksum)


def looks_like_api_key(raw: str) -> bool:
    return raw.startswith(API_KEY_PREFIX)


def new_opaque_token(prefix: str) -> tuple[str, str]:
    """A random bearer token and the SHA-256 hex digest that is stored instead of it."""
    raw = prefix + secrets.token_urlsafe(32)
    return raw, sha256_hex(raw)


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name="Forgeline")


def verify_totp(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step `code` belongs to (one step of clock drift either way, as authenticator
    apps expect), or None. Callers store the step so a code is accepted only once."""
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    moment = time.time() if now is None else now
    step = totp.timecode(datetime.fromtimestamp(moment, UTC))
    for candidate in (step, step - 1, step + 1):
        if hmac.compare_digest(totp.generate_otp(candidate), code):
            return candidate
    return None
