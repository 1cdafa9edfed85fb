"""Billing's domain errors (mapped to HTTP problems by the API, to activity errors by the
billing activities)."""

from __future__ import annotations

from forgeline.errors import Conflict, DomainError


class PeriodNotEnded(Conflict):
    """A billing period is invoiced only once it has ended."""

    title = "Billing period not ended"
    type_slug = "period-not-ended"


class BadWebhook(DomainError):
    status_code = 400
    title = "Invalid webhook"
    type_slug = "invalid-webhook"
