"""Stripe webhooks: verified, deduplicated by event ID, applied to invoices, payments and
subscriptions. The caller commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.billing import repository
from core.billing.errors import BadWebhook
from db.models.billing import Invoice, Payment
from db.models.integrations import WebhookPayload
from forgeline.settings import Settings
from forgeline.statuses.billing import InvoiceStatus, PaymentStatus, SubscriptionStatus
from infra.stripe_billing import WebhookSignatureInvalid, verify_webhook

WEBHOOK_TOLERANCE_SECONDS = 300
PAID_EVENTS = ("invoice.paid", "invoice.payment_succeeded")


@dataclass(frozen=True)
class WebhookOutcome:
    event_type: str
    duplicate: bool = False


def verify_stripe_event(
    settings: Settings, payload: bytes, signature: str | None
) -> dict[str, Any]:
    """The event of a correctly signed, recent delivery; BadWebhook (400) otherwise."""
    if settings.stripe_webhook_secret is None:
        raise BadWebhook("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET)")
    try:
        return verify_webhook(
            payload,
            signature,
            settings.stripe_webhook_secret.get_secret_value(),
            tolerance=WEBHOOK_TOLERANCE_SECONDS,
        )
    except WebhookSignatureInvalid as error:
        raise BadWebhook(str(error)) from error


async def handle_stripe_webhook(
    session: AsyncSession, settings: Settings, payload: bytes, signature: str | None
) -> WebhookOutcome:
    """Verify, deduplicate by event ID, apply to invoices/payments/subscriptions.

    Unsigned or stale deliveries are refused before anything is stored, so a forged request
    cannot claim a real event's ID and make the genuine delivery look like a duplicate.
    """
    event = verify_stripe_event(settings, payload, signature)
    event_type = str(event.get("type", ""))
    obj = (event.get("data") or {}).get("object") or {}
    stored = await session.execute(
        pg_insert(WebhookPayload)
        .values(
            provider="stripe",
            delivery_id=event["id"][:255],
            event_type=event_type[:100],
            payload=event,
            headers={"stripe-signature-scheme": "v1"},
            signature_valid=True,
            status="received",
        )
        .on_conflict_do_nothing(index_elements=["provider", "delivery_id"])
        .returning(WebhookPayload.id)
    )
    delivery_id = stored.scalar_one_or_none()
    if delivery_id is None:
        return WebhookOutcome(event_type, duplicate=True)
    organization_id, outcome = await _apply_stripe_event(session, event_type, event["id"], obj)
    await session.execute(
        update(WebhookPayload)
        .where(WebhookPayload.id == delivery_id)
        .values(status=outcome, processed_at=datetime.now(UTC), organization_id=organization_id)
    )
    return WebhookOutcome(event_type)


async def _apply_stripe_event(
    session: AsyncSession, event_type: str, event_id: str, obj: dict[str, Any]
) -> tuple[uuid.UUID | None, str]:
    if not event_type.startswith("invoice.") or not isinstance(obj.get("id"), str):
        return None, "ignored"
    invoice = (
        await session.scalars(
            select(Invoice).where(Invoice.stripe_invoice_id == obj["id"]).with_for_update()
        )
    ).first()
    if invoice is None:
        return None, "ignored"
    now = datetime.now(UTC)
    subscription = await repository.live_subscription(session, invoice.organization_id, lock=True)
    if event_type in PAID_EVENTS:
        if invoice.status != InvoiceStatus.PAID:
            invoice.status = InvoiceStatus.PAID
            invoice.amount_paid = invoice.total
            invoice.paid_at = now
        # A payment row unless the workflow (or an earlier event) recorded the success already.
        await session.execute(
            pg_insert(Payment)
            .values(
                invoice_id=invoice.id,
                organization_id=invoice.organization_id,
                amount=invoice.total,
                currency=invoice.currency,
                status=PaymentStatus.SUCCEEDED,
                stripe_charge_id=obj.get("charge") if isinstance(obj.get("charge"), str) else None,
                idempotency_key=f"stripe-event:{event_id}",
                paid_at=now,
            )
            .on_conflict_do_nothing()
        )
        if subscription is not None and subscription.status == SubscriptionStatus.PAST_DUE:
            subscription.status = SubscriptionStatus.ACTIVE
    elif event_type == "invoice.payment_failed":
        if subscription is not None and subscription.status == SubscriptionStatus.ACTIVE:
            subscription.status = SubscriptionStatus.PAST_DUE
    elif event_type == "invoice.voided":
        invoice.status = InvoiceStatus.VOID
        invoice.voided_at = now
    elif event_type == "invoice.marked_uncollectible":
        invoice.status = InvoiceStatus.UNCOLLECTIBLE
    else:
        return invoice.organization_id, "ignored"
    return invoice.organization_id, "processed"
