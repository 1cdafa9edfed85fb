"""Temporal payload encryption (AES-GCM), shared by every client and worker of the product.

Payloads carry a stage's resolved secret variables from the control plane to a build host: the
Temporal server (its history, its Web UI, its database) only ever sees ciphertext. Keys come from
`FORGELINE_PAYLOAD_KEYS` (comma-separated url-safe base64 32-byte keys, newest first: the first
encrypts, all decrypt); each payload names the id of the key that sealed it. In development a
generated key is kept in the data dir (`payload.key`), like `encryption.key`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

from forgeline.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
NONCE_BYTES = 12
KEY_FILE = "payload.key"


class PayloadKeyError(ValueError):
    """A payload cannot be decrypted with the configured keys (missing, wrong or tampered)."""


def generate_payload_key() -> str:
    return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode()


def key_id(key: bytes) -> str:
    """A short public name of a key (not the key): which key sealed a payload."""
    return hashlib.sha256(b"forgeline-payload-key:" + key).hexdigest()[:12]


def parse_payload_keys(raw: str) -> list[bytes]:
    keys = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            key = base64.urlsafe_b64decode(part.encode())
        except ValueError:
            key = b""
        if len(key) != 32:
            raise PayloadKeyError(
                "FORGELINE_PAYLOAD_KEYS must be url-safe base64 32-byte keys (generate with "
                "`python -c 'import base64,os; print(base64.urlsafe_b64encode(os.urandom(32))"
                ".decode())'`)"
            )
        keys.append(key)
    if not keys:
        raise PayloadKeyError("FORGELINE_PAYLOAD_KEYS is empty")
    return keys


class EncryptionCodec(PayloadCodec):
    """AES-GCM over each serialized payload (the temporalio encryption sample's scheme), with a
    key list for rotation. Payloads that were never encrypted pass through unchanged."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise PayloadKeyError("no payload keys")
        self._ciphers = {key_id(k): AESGCM(k) for k in keys}
        self._current = key_id(keys[0])

    @property
    def current_key_id(self) -> str:
        return self._current

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self._current]
        sealed = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: self._current.encode()},
                    data=nonce + cipher.encrypt(nonce, payload.SerializeToString(), None),
                )
            )
        return sealed

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        opened = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                opened.append(payload)
                continue
            kid = payload.metadata.get(KEY_ID_METADATA, b"").decode()
            cipher = self._ciphers.get(kid)
            if cipher is None:
                raise PayloadKeyError(
                    f"payload was encrypted with key {kid!r}, which is not among "
                    f"FORGELINE_PAYLOAD_KEYS (known: {sorted(self._ciphers)})"
                )
            data = payload.data
            try:
                plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
            except InvalidTag:
                raise PayloadKeyError(
                    f"payload sealed with key {kid!r} does not decrypt (tampered or corrupt)"
                ) from None
            opened.append(Payload.FromString(plain))
        return opened


def development_payload_key(data_dir: Path) -> str:
    """The data dir's generated key, created once (first writer wins, readable by its owner)."""
    path = data_dir / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_payload_key())
    return path.read_text().strip()


def payload_keys(settings: Settings) -> list[bytes]:
    """The configured keys; outside production without any, the data dir's generated key."""
    if settings.payload_keys is not None and settings.payload_keys.get_secret_value().strip():
        return parse_payload_keys(settings.payload_keys.get_secret_value())
    if settings.environment == "production":
        raise PayloadKeyError("FORGELINE_PAYLOAD_KEYS is required in production")
    return parse_payload_keys(development_payload_key(settings.data_dir))


def encrypted_data_converter(keys: Sequence[bytes]) -> DataConverter:
    """The pydantic data converter with payload encryption: what every client connects with."""
    return dataclasses.replace(pydantic_data_converter, payload_codec=EncryptionCodec(keys))


def data_converter(settings: Settings) -> DataConverter:
    return encrypted_data_converter(payload_keys(settings))
