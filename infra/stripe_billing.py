"""The one wrapper around the Stripe SDK: customers, payment methods, invoices, payments.

Every mutating call carries an idempotency key derived from business IDs (the organization, the
invoice number, the dunning attempt), so a retried activity replays Stripe's stored answer
instead of charging twice. SDK retries are off (max_network_retries=0): Temporal owns retries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import stripe

from forgeline.settings import Settings


class PaymentDeclined(Exception):
    """The card was declined; retried only by the dunning schedule, with a new attempt key."""


class StripeRequestRejected(Exception):
    """Stripe refused the request as invalid (4xx other than a decline); retrying cannot help."""


class WebhookSignatureInvalid(Exception):
    """A webhook delivery whose signature or timestamp does not verify, or that is no event."""


# Any failure reaching or answered by Stripe that the wrapper does not translate (network,
# authentication, rate limits, server errors): callers report Stripe as unavailable.
StripeError = stripe.StripeError


def verify_webhook(
    payload: bytes, signature: str | None, secret: str, *, tolerance: int
) -> dict[str, Any]:
    """The event of a correctly signed delivery at most `tolerance` seconds old."""
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature, secret, tolerance=tolerance
        )
        event = json.loads(payload)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as error:
        raise WebhookSignatureInvalid(f"Signature verification failed: {error}") from error
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise WebhookSignatureInvalid("Not a Stripe event")
    return event


@dataclass(frozen=True)
class CardDetails:
    payment_method_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    country: str | None


@dataclass(frozen=True)
class InvoiceLineCents:
    description: str
    amount_cents: int


@dataclass(frozen=True)
class PaymentResult:
    stripe_invoice_id: str
    charge_id: str | None
    amount_paid_cents: int
    status: str  # "paid"


def _rejected(error: stripe.InvalidRequestError) -> StripeRequestRejected:
    return StripeRequestRejected(f"{error.code or 'invalid_request'}: {error.user_message}")


class StripeBilling:
    def __init__(self, api_key: str, *, api_base: str | None = None, timeout: float = 30.0) -> None:
        base_addresses: dict[str, str] = {"api": api_base} if api_base else {}
        self._client = stripe.StripeClient(
            api_key,
            base_addresses=base_addresses,  # type: ignore[arg-type]
            max_network_retries=0,
            http_client=stripe.HTTPXClient(timeout=timeout),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeBilling | None:
        """None when no key is configured: invoices are then issued for manual collection."""
        if settings.stripe_api_key is None:
            return None
        return cls(
            settings.stripe_api_key.get_secret_value(),
            api_base=settings.stripe_api_base,
            timeout=settings.stripe_timeout_seconds,
        )

    # ------------------------------------------------------------------ customers, cards

    async def ensure_customer(self, *, organization_id: str, name: str, email: str | None) -> str:
        """Create the organization's customer; the caller stores the ID (keys expire after 24h)."""
        params: dict[str, Any] = {"name": name, "metadata": {"organization_id": organization_id}}
        if email:
            params["email"] = email
        customer = await self._client.v1.customers.create_async(
            params,  # type: ignore[arg-type]
            {"idempotency_key": f"forgeline-customer-{organization_id}"},
        )
        return str(customer.id)

    async def attach_card(
        self, *, customer_id: str, payment_method_id: str, make_default: bool
    ) -> CardDetails:
        try:
            pm = await self._client.v1.payment_methods.attach_async(
                payment_method_id,
                {"customer": customer_id},
                {"idempotency_key": f"forgeline-attach-{customer_id}-{payment_method_id}"},
            )
            if make_default:
                await self.set_default_card(customer_id=customer_id, payment_method_id=pm.id)
        except stripe.CardError as error:
            raise PaymentDeclined(error.user_message or "card declined") from error
        except stripe.InvalidRequestError as error:
            raise _rejected(error) from error
        card = pm.card
        if card is None:
            raise StripeRequestRejected("only card payment methods are supported")
        return CardDetails(
            payment_method_id=str(pm.id),
            brand=str(card.brand),
            last4=str(card.last4),
            exp_month=int(card.exp_month),
            exp_year=int(card.exp_year),
            country=card.country,
        )

    async def set_default_card(self, *, customer_id: str, payment_method_id: str) -> None:
        await self._client.v1.customers.update_async(
            customer_id,
            {"invoice_settings": {"default_payment_method": payment_method_id}},
        )

    async def detach_card(self, payment_method_id: str) -> None:
        try:
            await self._client.v1.payment_methods.detach_async(payment_method_id)
        except stripe.InvalidRequestError as error:
            if error.code != "resource_missing":
                raise _rejected(error) from error

    # ------------------------------------------------------------------ invoices

    async def create_invoice(
        self,
        *,
        customer_id: str,
        invoice_number: str,
        organization_id: str,
        lines: list[InvoiceLineCents],
        currency: str = "usd",
    ) -> str:
        """Draft invoice + one item per line, keyed `{invoice_number}:...`; returns Stripe's ID."""
        try:
            invoice = await self._client.v1.invoices.create_async(
                {
                    "customer": customer_id,
                    "auto_advance": False,
                    "collection_method": "charge_automatically",
                    "currency": currency,
                    "pending_invoice_items_behavior": "exclude",
                    "metadata": {
                        "invoice_number": invoice_number,
                        "organization_id": organization_id,
                    },
                },
                {"idempotency_key": f"{invoice_number}:invoice"},
            )
            invoice_id = str(invoice.id)
            for index, line in enumerate(lines):
                await self._client.v1.invoice_items.create_async(
                    {
                        "customer": customer_id,
                        "invoice": invoice_id,
                        "amount": line.amount_cents,
                        "currency": currency,
                        "description": line.description,
                    },
                    {"idempotency_key": f"{invoice_number}:item:{index}"},
                )
        except stripe.InvalidRequestError as error:
            raise _rejected(error) from error
        return invoice_id

    async def finalize_invoice(self, *, stripe_invoice_id: str, invoice_number: str) -> None:
        try:
            await self._client.v1.invoices.finalize_invoice_async(
                stripe_invoice_id,
                {"auto_advance": False},
                {"idempotency_key": f"{invoice_number}:finalize"},
            )
        except stripe.InvalidRequestError as error:
            raise _rejected(error) from error

    async def pay_invoice(
        self, *, stripe_invoice_id: str, invoice_number: str, attempt: int
    ) -> PaymentResult:
        """Charge the default card. One key per dunning attempt: a retried activity replays the
        attempt's stored answer; a paid invoice (webhook, earlier attempt) counts as success."""
        try:
            invoice = await self._client.v1.invoices.pay_async(
                stripe_invoice_id,
                {},
                {"idempotency_key": f"{invoice_number}:pay:{attempt}"},
            )
        except stripe.CardError as error:
            raise PaymentDeclined(error.user_message or "card declined") from error
        except stripe.InvalidRequestError as error:
            if error.code != "invoice_already_paid":
                raise _rejected(error) from error
            invoice = await self._client.v1.invoices.retrieve_async(stripe_invoice_id)
        raw = invoice.to_dict()
        return PaymentResult(
            stripe_invoice_id=str(invoice.id),
            charge_id=raw.get("charge") if isinstance(raw.get("charge"), str) else None,
            amount_paid_cents=int(raw.get("amount_paid") or 0),
            status="paid",
        )

    async def close(self) -> None:
        """Release the underlying HTTP connection pool."""
        http_client = self._client._requestor._client
        close = getattr(http_client, "close_async", None)
        if close is not None:
            await close()
