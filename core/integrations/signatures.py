"""Webhook authenticity: GitHub's HMAC-SHA256 signature over the raw body, GitLab's shared token.
Both compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

GITHUB_SIGNATURE_PREFIX = "sha256="


def github_signature(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return GITHUB_SIGNATURE_PREFIX + digest


def github_signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith(GITHUB_SIGNATURE_PREFIX):
        return False
    expected = github_signature(secret, body).encode()
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


def gitlab_token_valid(secret: str, header: str | None) -> bool:
    if not header:
        return False
    return hmac.compare_digest(secret.encode(), header.encode("utf-8", "replace"))
