"""Billing's domain errors (mapped to HTTP problems by the API, to activity errors by the
billing activities)."""

from __future__ import annotations

from forgeline.errors import Conflict, DomainError


class PeriodNotEnded(Conflict, title="Billing period not ended", slug="period-not-ended"):
    """A billing period is invoiced only once it has ended."""


class BadWebhook(DomainError, status=400, title="Invalid webhook", slug="invalid-webhook"): ...
