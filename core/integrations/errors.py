"""Why a webhook delivery is refused: each a clear 4xx problem, raised before anything is
written (only the rejected-delivery counter counts it)."""

from __future__ import annotations

from forgeline.errors import DomainError, NotFound, Unauthorized


class UnknownRepository(NotFound, slug="unknown-repository"): ...


class SignatureInvalid(
    Unauthorized, title="Webhook signature invalid", slug="webhook-signature-invalid"
): ...


class UnsupportedEvent(
    DomainError, status=400, title="Unsupported event", slug="unsupported-event"
): ...


class MalformedDelivery(
    DomainError, status=400, title="Malformed delivery", slug="malformed-delivery"
): ...


class DeliveryTooLarge(
    DomainError, status=413, title="Payload too large", slug="payload-too-large"
): ...
