"""The /v1/plans and /v1/billing API on real Postgres (+ Temporal, fake Stripe where needed)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy import func, select, update

from core.billing.metering import record_usage
from core.billing.periods import Period
from db.models.billing import Invoice, Payment, Subscription
from db.models.integrations import WebhookPayload
from db.models.operations import WorkflowExecution
from db.models.projects import Project
from db.session import session_scope
from forgeline.settings import BILLING_TASK_QUEUE
from tests.billing.conftest import billing_worker, subscribe
from tests.billing.fake_stripe import FakeStripe
from tests.factories import make_org

WEBHOOK_SECRET = "whsec_test_secret"
LAST_MONTH = Period.containing(datetime.now(UTC)).previous()


@contextmanager
def stripe_settings(app: Any, fake: FakeStripe | None) -> Iterator[None]:
    """Point the running app at the fake Stripe (and a webhook secret) for one test."""
    original = app.state.settings
    update_fields: dict[str, Any] = {"stripe_webhook_secret": SecretStr(WEBHOOK_SECRET)}
    if fake is not None:
        update_fields |= {
            "stripe_api_key": SecretStr("sk_test_fake"),
            "stripe_api_base": fake.url,
            "stripe_timeout_seconds": 2.0,
        }
    app.state.settings = original.model_copy(update=update_fields)
    try:
        yield
    finally:
        app.state.settings = original


@pytest.fixture
async def with_stripe(app: Any, fake_stripe: FakeStripe) -> AsyncIterator[FakeStripe]:
    with stripe_settings(app, fake_stripe):
        yield fake_stripe


def _signed(event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, age: int = 0):
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(
        payload, secret, timestamp=int(time.time()) - age
    )
    return payload, {"Stripe-Signature": header, "Content-Type": "application/json"}


async def test_plans_are_public(api_client, plans):
    response = await api_client.get("/v1/plans")
    assert response.status_code == 200
    body = response.json()
    assert [p["slug"] for p in body] == ["free", "starter", "pro", "enterprise"]
    pro = body[2]
    assert pro["price_monthly"] == "49.00" and pro["max_pipelines_per_project"] is None
    assert pro["overage_prices"]["build_minutes"] == "0.02"
    assert body[3]["price_monthly"] is None
    assert {f["feature_key"] for f in pro["features"]} >= {"team_members", "concurrent_builds"}


async def test_subscription_lifecycle(api_client, session_maker, plans):
    org = await make_org(session_maker)
    h = org.headers
    assert (await api_client.get("/v1/billing/subscription", headers=h)).status_code == 404
    for bad in (
        {"plan": "nope"},
        {"plan": "enterprise"},
        {"plan": "pro", "trial_days": -1},
        {"plan": "pro", "status": "active"},
    ):
        response = await api_client.post("/v1/billing/subscription", headers=h, json=bad)
        assert response.status_code == 422, bad
    created = await api_client.post(
        "/v1/billing/subscription", headers=h, json={"plan": "pro", "trial_days": 14}
    )
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["status"] == "trialing" and sub["plan"] == "pro" and sub["trial_end"]
    again = await api_client.post("/v1/billing/subscription", headers=h, json={"plan": "starter"})
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    changed = await api_client.patch(
        "/v1/billing/subscription", headers=h, json={"plan": "starter"}
    )
    assert changed.status_code == 200
    # A plan change applies at once (its billing is prorated by the period's invoice).
    assert changed.json()["plan"] == "starter" and changed.json()["pending_plan"] is None
    cancelled = await api_client.patch(
        "/v1/billing/subscription", headers=h, json={"cancel_at_period_end": True}
    )
    assert cancelled.json()["cancel_at_period_end"] is True
    assert (
        await api_client.patch("/v1/billing/subscription", headers=h, json={})
    ).status_code == 422
    got = await api_client.get("/v1/billing/subscription", headers=h)
    assert got.json()["id"] == sub["id"]
    # Scopes: reading needs billing:read, changing needs admin.
    reader = await make_org(session_maker, scopes=["billing:read"])
    assert (
        await api_client.patch(
            "/v1/billing/subscription", headers=reader.headers, json={"plan": "pro"}
        )
    ).status_code == 403
    nobody = await make_org(session_maker, scopes=["projects:read"])
    assert (
        await api_client.get("/v1/billing/subscription", headers=nobody.headers)
    ).status_code == 403


async def test_payment_methods_keep_only_card_summary(
    api_client, session_maker, plans, with_stripe
):
    org = await make_org(session_maker)
    h = org.headers
    # Stripe configured + paid plan without trial needs a card first.
    refused = await api_client.post("/v1/billing/subscription", headers=h, json={"plan": "pro"})
    assert refused.status_code == 402 and refused.json()["limit"] == "payment_method"
    first = await api_client.post(
        "/v1/billing/payment-methods", headers=h, json={"payment_method_id": "pm_card_visa"}
    )
    assert first.status_code == 201, first.text
    card = first.json()
    assert (card["brand"], card["last4"], card["exp_month"], card["country"]) == (
        "visa",
        "4242",
        12,
        "US",
    )
    assert card["is_default"] and "stripe_payment_method_id" not in card
    second = await api_client.post(
        "/v1/billing/payment-methods",
        headers=h,
        json={"payment_method_id": "pm_card_mastercard", "make_default": True},
    )
    listed = (await api_client.get("/v1/billing/payment-methods", headers=h)).json()
    assert [(m["last4"], m["is_default"]) for m in listed] == [("4444", True), ("4242", False)]
    bad = await api_client.post(
        "/v1/billing/payment-methods", headers=h, json={"payment_method_id": "pm_unknown"}
    )
    assert bad.status_code == 422
    other = await make_org(session_maker)
    assert (
        await api_client.delete(
            f"/v1/billing/payment-methods/{second.json()['id']}", headers=other.headers
        )
    ).status_code == 404
    deleted = await api_client.delete(
        f"/v1/billing/payment-methods/{second.json()['id']}", headers=h
    )
    assert deleted.status_code == 204
    listed = (await api_client.get("/v1/billing/payment-methods", headers=h)).json()
    assert [(m["last4"], m["is_default"]) for m in listed] == [("4242", True)]
    subscribed = await api_client.post("/v1/billing/subscription", headers=h, json={"plan": "pro"})
    assert subscribed.status_code == 201 and subscribed.json()["status"] == "active"


async def test_usage_by_type_and_project(api_client, session_maker, plans):
    org = await make_org(session_maker)
    period = Period.containing(datetime.now(UTC))
    async with session_scope(session_maker) as session:
        project = Project(organization_id=org.org_id, name="Web", slug="web", project_type="api")
        session.add(project)
        await session.flush()
        for i, (project_id, kind, qty) in enumerate(
            [
                (project.id, "build_minutes", "30"),
                (project.id, "build_minutes", "12"),
                (None, "agent_tokens", "5000"),
                (project.id, "storage_gb", "1.5"),
            ]
        ):
            await record_usage(
                session,
                organization_id=org.org_id,
                project_id=project_id,
                usage_type=kind,
                quantity=qty,
                idempotency_key=f"usage-api-{org.org_id}-{i}",
            )
    response = await api_client.get(
        "/v1/billing/usage", headers=org.headers, params={"period": period.key}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["period"] == period.key
    assert {(t["usage_type"], t["quantity"]) for t in body["by_type"]} == {
        ("agent_tokens", "5000"),
        ("build_minutes", "42"),
        ("storage_gb", "1.5"),
    }
    assert len(body["by_project"]) == 3
    assert (
        await api_client.get("/v1/billing/usage", headers=org.headers, params={"period": "2026-13"})
    ).status_code == 422
    empty = await api_client.get(
        "/v1/billing/usage", headers=org.headers, params={"period": "2001-01"}
    )
    assert empty.json()["by_type"] == []


async def test_run_billing_lists_invoices_and_never_duplicates(
    api_client, app, session_maker, temporal_client, plans
):
    sub = await subscribe(session_maker, plans, plan="starter", started=LAST_MONTH.start)
    h = sub.org.headers
    async with billing_worker(temporal_client, BILLING_TASK_QUEUE, session_maker, None):
        run = await api_client.post(
            "/v1/billing/invoices/run", headers=h, json={"period": LAST_MONTH.key}
        )
        assert run.status_code == 202, run.text
        assert run.json()["started"] is True
        await temporal_client.get_workflow_handle(run.json()["workflow_id"]).result()
        again = await api_client.post(
            "/v1/billing/invoices/run", headers=h, json={"period": LAST_MONTH.key}
        )
        assert again.json()["started"] is False
    async with session_maker() as session:
        executions = (
            await session.scalars(
                select(WorkflowExecution).where(
                    WorkflowExecution.workflow_id == run.json()["workflow_id"]
                )
            )
        ).all()
    assert [(e.kind, e.status) for e in executions] == [("billing", "completed")]
    future = await api_client.post(
        "/v1/billing/invoices/run",
        headers=h,
        json={"period": Period.containing(datetime.now(UTC) + timedelta(days=40)).key},
    )
    assert future.status_code == 422
    listed = (await api_client.get("/v1/billing/invoices", headers=h)).json()
    assert len(listed["items"]) == 1
    invoice = listed["items"][0]
    assert (invoice["period"], invoice["total"], invoice["status"]) == (
        LAST_MONTH.key,
        "19.00",
        "open",
    )
    detail = await api_client.get(f"/v1/billing/invoices/{invoice['id']}", headers=h)
    assert detail.json()["line_items"][0]["amount"] == "19.00"
    other = await make_org(session_maker)
    assert (
        await api_client.get(f"/v1/billing/invoices/{invoice['id']}", headers=other.headers)
    ).status_code == 404
    member = await make_org(session_maker, scopes=["billing:read"])
    assert (
        await api_client.post("/v1/billing/invoices/run", headers=member.headers)
    ).status_code == 403


async def test_stripe_webhooks_verified_and_deduplicated(api_client, app, session_maker, plans):
    sub = await subscribe(session_maker, plans, plan="starter", started=LAST_MONTH.start)
    async with session_scope(session_maker) as session:
        invoice = Invoice(
            organization_id=sub.org_id,
            subscription_id=sub.subscription_id,
            invoice_number=f"FL-WEBHOOK-{sub.org_id.hex[:8]}",
            period_start=LAST_MONTH.start,
            period_end=LAST_MONTH.end,
            status="open",
            subtotal=Decimal("19.00"),
            total=Decimal("19.00"),
            stripe_invoice_id=f"in_webhook_{sub.org_id.hex[:12]}",
        )
        session.add(invoice)
        await session.execute(
            update(Subscription)
            .where(Subscription.id == sub.subscription_id)
            .values(status="past_due")
        )
    event_id = f"evt_{sub.org_id.hex}"
    event = {
        "id": event_id,
        "type": "invoice.paid",
        "data": {"object": {"id": invoice.stripe_invoice_id, "charge": "ch_webhook"}},
    }
    with stripe_settings(app, None):
        payload, headers = _signed(event, secret="whsec_wrong")
        assert (
            await api_client.post("/v1/webhooks/stripe", content=payload, headers=headers)
        ).status_code == 400
        payload, headers = _signed(event, age=3600)  # outside the 5-minute tolerance
        assert (
            await api_client.post("/v1/webhooks/stripe", content=payload, headers=headers)
        ).status_code == 400
        unsigned = await api_client.post("/v1/webhooks/stripe", content=json.dumps(event))
        assert unsigned.status_code == 400
        payload, headers = _signed(event)
        tampered = payload.replace("ch_webhook", "ch_evil")
        assert (
            await api_client.post("/v1/webhooks/stripe", content=tampered, headers=headers)
        ).status_code == 400
        first = await api_client.post("/v1/webhooks/stripe", content=payload, headers=headers)
        assert first.status_code == 200 and first.json()["duplicate"] is False
        replay = await api_client.post("/v1/webhooks/stripe", content=payload, headers=headers)
        assert replay.status_code == 200 and replay.json()["duplicate"] is True
        # A different event for the same invoice adds no second successful payment.
        payload2, headers2 = _signed({**event, "id": event_id + "_2"})
        assert (
            await api_client.post("/v1/webhooks/stripe", content=payload2, headers=headers2)
        ).status_code == 200
    async with session_maker() as session:
        stored = await session.scalar(
            select(func.count())
            .select_from(WebhookPayload)
            .where(WebhookPayload.delivery_id == event_id)
        )
        refreshed = await session.get_one(Invoice, invoice.id)
        payments = (
            await session.scalars(select(Payment).where(Payment.invoice_id == invoice.id))
        ).all()
        subscription = await session.get_one(Subscription, sub.subscription_id)
    assert stored == 1
    assert refreshed.status == "paid" and refreshed.amount_paid == Decimal("19.00")
    assert [p.status for p in payments] == ["succeeded"]
    assert subscription.status == "active"
    await asyncio.sleep(0)
