"""The Stripe wrapper driven by the real `stripe` client against the fake server, with faults."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from infra.stripe_billing import InvoiceLineCents, PaymentDeclined, StripeBilling
from tests.billing.fake_stripe import FakeStripe


@pytest.fixture
async def fake():
    server = FakeStripe(hang_seconds=3)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def billing(fake):
    client = StripeBilling("sk_test_fake", api_base=fake.url, timeout=1.0)
    yield client
    await client.close()


async def _retrying(call: Any, attempts: int = 6) -> Any:
    """What Temporal does for a retryable activity: same inputs, same idempotency keys."""
    for attempt in range(attempts):
        try:
            return await call()
        except (stripe.APIConnectionError, stripe.APIError):
            if attempt == attempts - 1:
                raise
    raise AssertionError


async def _invoice(
    billing: StripeBilling, number: str = "FL-TEST-202601", org: str = "org-1"
) -> tuple[str, str]:
    customer = await billing.ensure_customer(organization_id=org, name="Acme", email=None)
    await billing.attach_card(
        customer_id=customer, payment_method_id="pm_card_visa", make_default=True
    )
    invoice_id = await billing.create_invoice(
        customer_id=customer,
        invoice_number=number,
        organization_id=org,
        lines=[InvoiceLineCents("Pro plan", 4900), InvoiceLineCents("Tax", 490)],
    )
    await billing.finalize_invoice(stripe_invoice_id=invoice_id, invoice_number=number)
    return customer, invoice_id


async def test_happy_path_charges_once(fake, billing):
    customer, invoice_id = await _invoice(billing)
    result = await billing.pay_invoice(
        stripe_invoice_id=invoice_id, invoice_number="FL-TEST-202601", attempt=0
    )
    assert result.amount_paid_cents == 5390
    assert len(fake.successful_charges(invoice_id)) == 1
    # Same attempt again: replayed; a different attempt on a paid invoice: "already paid" = success.
    again = await billing.pay_invoice(
        stripe_invoice_id=invoice_id, invoice_number="FL-TEST-202601", attempt=0
    )
    other = await billing.pay_invoice(
        stripe_invoice_id=invoice_id, invoice_number="FL-TEST-202601", attempt=1
    )
    assert again.charge_id == other.charge_id == result.charge_id
    assert len(fake.successful_charges()) == 1
    default = fake.customers[customer]["invoice_settings"]["default_payment_method"]
    assert fake.payment_methods[default]["metadata"]["token"] == "pm_card_visa"


@pytest.mark.parametrize(
    "faults",
    [
        [("500", "/pay")],
        [("timeout_after_commit", "/pay")],
        [("drop_after_commit", "/pay")],
        [
            ("500", "/invoices"),
            ("drop_after_commit", "/invoiceitems"),
            ("timeout_after_commit", "/pay"),
        ],
        [("drop_after_commit", "/customers"), ("500", "/finalize"), ("drop_after_commit", "/pay")],
    ],
)
async def test_any_fault_sequence_gives_one_invoice_one_charge(fake, billing, faults):
    for kind, path in faults:
        fake.inject(kind, path)
    number = "FL-FAULTS-202602"

    async def run():
        customer = await billing.ensure_customer(organization_id="org-f", name="F", email=None)
        await billing.attach_card(
            customer_id=customer, payment_method_id="pm_card_visa", make_default=True
        )
        invoice_id = await billing.create_invoice(
            customer_id=customer,
            invoice_number=number,
            organization_id="org-f",
            lines=[InvoiceLineCents("Starter plan", 1900)],
        )
        await billing.finalize_invoice(stripe_invoice_id=invoice_id, invoice_number=number)
        return await billing.pay_invoice(
            stripe_invoice_id=invoice_id, invoice_number=number, attempt=0
        )

    result = await _retrying(run)
    assert result.amount_paid_cents == 1900
    assert len(fake.customers) == 1
    assert len(fake.invoices_by_number(number)) == 1
    assert len(fake.invoice_items) == 1
    assert len(fake.successful_charges()) == 1
    assert not fake.faults


async def test_decline_is_stored_and_next_attempt_can_succeed(fake, billing):
    _customer, invoice_id = await _invoice(billing, number="FL-DECLINE-202603")
    fake.inject("decline", "/pay")
    with pytest.raises(PaymentDeclined):
        await billing.pay_invoice(
            stripe_invoice_id=invoice_id, invoice_number="FL-DECLINE-202603", attempt=0
        )
    # Replaying attempt 0 replays the stored decline, like Stripe.
    with pytest.raises(PaymentDeclined):
        await billing.pay_invoice(
            stripe_invoice_id=invoice_id, invoice_number="FL-DECLINE-202603", attempt=0
        )
    result = await billing.pay_invoice(
        stripe_invoice_id=invoice_id, invoice_number="FL-DECLINE-202603", attempt=1
    )
    assert result.status == "paid"
    assert len(fake.successful_charges(invoice_id)) == 1
    assert len([c for c in fake.charges if c["status"] == "failed"]) == 1
