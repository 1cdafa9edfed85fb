"""Why a webhook delivery is refused: each a clear 4xx problem, raised before anything is
written (only the rejected-delivery counter counts it)."""

from __future__ import annotations

from forgeline.errors import DomainError, NotFound, Unauthorized


class UnknownRepository(NotFound):
    type_slug = "unknown-repository"


class SignatureInvalid(Unauthorized):
    title = "Webhook signature invalid"
    type_slug = "webhook-signature-invalid"


class UnsupportedEvent(DomainError):
    status_code = 400
    title = "Unsupported event"
    type_slug = "unsupported-event"


class MalformedDelivery(DomainError):
    status_code = 400
    title = "Malformed delivery"
    type_slug = "malformed-delivery"


class DeliveryTooLarge(DomainError):
    status_code = 413
    title = "Payload too large"
    type_slug = "payload-too-large"
