"""Errors of the accounts domain beyond the shared ones in forgeline.errors."""

from __future__ import annotations

from forgeline.errors import DomainError, Unauthorized


class TotpRequired(Unauthorized, title="Second factor required", slug="totp-required"): ...


class InvalidToken(
    DomainError, status=400, title="Invalid or expired token", slug="invalid-token"
): ...
