"""/v1 routes for plans, the subscription, payment methods, usage, invoices and Stripe webhooks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import origin_of
from api.billing import render
from api.billing.schemas import (
    BillingRunOut,
    BillingRunRequest,
    InvoiceDetail,
    InvoiceOut,
    PaymentMethodCreate,
    PaymentMethodOut,
    PeriodText,
    PlanOut,
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionUpdate,
    UsageOut,
    WebhookAck,
)
from api.deps import (
    Admin,
    BillingReader,
    SessionDep,
    SettingsDep,
    TemporalDep,
    get_temporal,
)
from api.pagination import Page, PageDep, build_page
from core.billing import limits, payment_methods, plans, statements, subscriptions, webhooks
from core.billing.periods import Period

router = APIRouter(tags=["billing"])


@router.get("/plans", summary="Public plan catalogue with limits and overage prices")
async def list_plans(session: SessionDep) -> list[PlanOut]:
    return [render.plan_out(entry) for entry in await plans.public_plans(session)]


@router.get("/billing/subscription", responses={404: {"description": "No subscription (Free)"}})
async def get_subscription(session: SessionDep, principal: BillingReader) -> SubscriptionOut:
    return render.subscription_out(await subscriptions.current(session, principal.organization_id))


@router.post(
    "/billing/subscription",
    status_code=status.HTTP_201_CREATED,
    responses={402: {"description": "Payment method required"}, 409: {"description": "Exists"}},
)
async def create_subscription(
    body: SubscriptionCreate,
    session: SessionDep,
    principal: Admin,
    settings: SettingsDep,
    request: Request,
) -> SubscriptionOut:
    subscription = await subscriptions.subscribe(
        session,
        principal,
        origin_of(request),
        plan_slug=body.plan,
        trial_days=body.trial_days,
        cards_required=settings.stripe_api_key is not None,
    )
    await _apply_plan_to_build_slots(session, request, principal.organization_id)
    return render.subscription_out(subscription)


@router.patch(
    "/billing/subscription",
    summary="Change plan (prorated on the next invoice) or cancel at period end",
)
async def update_subscription(
    body: SubscriptionUpdate,
    session: SessionDep,
    principal: Admin,
    settings: SettingsDep,
    request: Request,
) -> SubscriptionOut:
    subscription = await subscriptions.change(
        session,
        principal,
        origin_of(request),
        plan_slug=body.plan,
        cancel_at_period_end=body.cancel_at_period_end,
        cards_required=settings.stripe_api_key is not None,
    )
    await _apply_plan_to_build_slots(session, request, principal.organization_id)
    return render.subscription_out(subscription)


async def _apply_plan_to_build_slots(
    session: AsyncSession, request: Request, organization_id: uuid.UUID
) -> None:
    await limits.apply_plan_to_build_slots(
        session, request.app.state.session_maker, partial(get_temporal, request), organization_id
    )


@router.get("/billing/payment-methods")
async def list_payment_methods(
    session: SessionDep, principal: BillingReader
) -> list[PaymentMethodOut]:
    cards = await payment_methods.attached(session, principal.organization_id)
    return [render.payment_method_out(card) for card in cards]


@router.post("/billing/payment-methods", status_code=status.HTTP_201_CREATED)
async def attach_payment_method(
    body: PaymentMethodCreate,
    session: SessionDep,
    principal: Admin,
    settings: SettingsDep,
    request: Request,
) -> PaymentMethodOut:
    card = await payment_methods.attach(
        session,
        principal,
        origin_of(request),
        settings,
        payment_method_id=body.payment_method_id,
        make_default=body.make_default,
    )
    return render.payment_method_out(card)


@router.delete(
    "/billing/payment-methods/{payment_method_id}", status_code=status.HTTP_204_NO_CONTENT
)
async def delete_payment_method(
    payment_method_id: uuid.UUID,
    session: SessionDep,
    principal: Admin,
    settings: SettingsDep,
    request: Request,
) -> Response:
    await payment_methods.detach(
        session, principal, origin_of(request), settings, payment_method_id
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/billing/usage", summary="Usage of a period by type and by project")
async def get_usage(
    session: SessionDep,
    principal: BillingReader,
    period: Annotated[PeriodText | None, Query(description="YYYY-MM; default: this month")] = None,
) -> UsageOut:
    month = Period.parse(period) if period else Period.containing(datetime.now(UTC))
    return render.usage_out(await statements.usage(session, principal.organization_id, month))


@router.get("/billing/invoices")
async def list_invoices(
    session: SessionDep,
    principal: BillingReader,
    page: PageDep,
) -> Page[InvoiceOut]:
    rows = await statements.invoices_page(
        session, principal.organization_id, cursor=page.cursor, limit=page.limit
    )
    return build_page(
        rows,
        limit=page.limit,
        key=lambda inv: (inv.period_start, inv.id),
        to_item=render.invoice_out,
    )


@router.get("/billing/invoices/{invoice_id}")
async def get_invoice(
    invoice_id: uuid.UUID, session: SessionDep, principal: BillingReader
) -> InvoiceDetail:
    statement = await statements.invoice_statement(session, principal.organization_id, invoice_id)
    return render.invoice_detail(statement)


@router.post(
    "/billing/invoices/run",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Close a billing period now (the workflow the monthly schedule would start)",
)
async def run_billing(
    session: SessionDep,
    principal: Admin,
    temporal: TemporalDep,
    request: Request,
    body: BillingRunRequest | None = None,
) -> BillingRunOut:
    period = body.period if body is not None else None
    run = await statements.run_billing(session, principal, origin_of(request), temporal, period)
    return render.billing_run_out(run)


@router.post(
    "/webhooks/stripe",
    summary="Stripe events (signature and timestamp verified, deduplicated by event ID)",
    responses={400: {"description": "Bad or stale signature"}},
)
async def stripe_webhook(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> WebhookAck:
    payload = await request.body()
    outcome = await webhooks.handle_stripe_webhook(session, settings, payload, stripe_signature)
    return render.webhook_ack(outcome)
