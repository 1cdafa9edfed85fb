"""Errors of the accounts domain beyond the shared ones in forgeline.errors."""

from __future__ import annotations

from forgeline.errors import DomainError, Forbidden, Unauthorized


class TotpRequired(Unauthorized, title="Second factor required", slug="totp-required"): ...


class InvalidToken(
    DomainError, status=400, title="Invalid or expired token", slug="invalid-token"
): ...


class ReauthenticationRequired(
    Forbidden, title="Confirm it is you", slug="reauthentication-required"
):
    """A sensitive change needs the account's password (and TOTP code) given with it."""


class ReauthenticationFailed(
    Forbidden, title="Password or code refused", slug="reauthentication-failed"
): ...
