"""Billing use cases behind /v1/plans and /v1/billing: subscriptions, cards, usage, invoices,
manual billing runs and Stripe webhooks. The request's unit of work commits at the edge."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

import stripe
from fastapi import Request
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.audit import write_audit
from api.billing.schemas import (
    BillingRunOut,
    BillingRunRequest,
    InvoiceDetail,
    InvoiceLineOut,
    InvoiceOut,
    PaymentMethodCreate,
    PaymentMethodOut,
    PlanFeatureOut,
    PlanOut,
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionUpdate,
    UsageByProject,
    UsageByType,
    UsageOut,
    WebhookAck,
)
from api.deps import Principal
from core.billing.executions import record_billing_execution
from core.billing.periods import Period
from core.billing.plan_history import change_plan
from core.billing.pricing import USAGE_UNITS
from core.billing.schedules import start_billing_workflow
from db.models.accounts import Organization
from db.models.billing import (
    Invoice,
    Payment,
    PaymentMethod,
    Plan,
    PlanFeature,
    Subscription,
    UsageRecord,
)
from db.models.integrations import WebhookPayload
from forgeline.errors import (
    Conflict,
    DomainError,
    NotFound,
    PaymentRequired,
    ProviderUnavailable,
    ValidationFailed,
)
from forgeline.settings import Settings
from forgeline.statuses.billing import LIVE_SUBSCRIPTION_STATUSES
from infra.stripe_billing import PaymentDeclined, StripeBilling, StripeRequestRejected

WEBHOOK_TOLERANCE_SECONDS = 300


class PeriodNotEnded(Conflict):
    title = "Billing period not ended"
    type_slug = "period-not-ended"


class BadWebhook(DomainError):
    status_code = 400
    title = "Invalid webhook"
    type_slug = "invalid-webhook"


@lru_cache(maxsize=4)
def _stripe_client(api_key: str, api_base: str | None, timeout: float) -> StripeBilling:
    return StripeBilling(api_key, api_base=api_base, timeout=timeout)


def stripe_for(settings: Settings) -> StripeBilling | None:
    """One Stripe client per configuration for the API process (built on first use)."""
    if settings.stripe_api_key is None:
        return None
    return _stripe_client(
        settings.stripe_api_key.get_secret_value(),
        settings.stripe_api_base,
        settings.stripe_timeout_seconds,
    )


# --------------------------------------------------------------------------- plans


async def list_plans(session: AsyncSession) -> list[PlanOut]:
    plans = (
        await session.scalars(
            select(Plan).where(Plan.is_public, Plan.is_active).order_by(Plan.sort_order, Plan.slug)
        )
    ).all()
    features = (
        await session.scalars(
            select(PlanFeature)
            .where(PlanFeature.plan_id.in_([p.id for p in plans]))
            .order_by(PlanFeature.feature_key)
        )
    ).all()
    by_plan: dict[uuid.UUID, list[PlanFeatureOut]] = {}
    for feature in features:
        by_plan.setdefault(feature.plan_id, []).append(
            PlanFeatureOut(
                feature_key=feature.feature_key,
                limit_value=feature.limit_value,
                enabled=feature.enabled,
            )
        )
    return [
        PlanOut(
            slug=p.slug,
            name=p.name,
            description=p.description,
            price_monthly=p.price_monthly,
            currency=p.currency,
            max_projects=p.max_projects,
            max_pipelines_per_project=p.max_pipelines_per_project,
            max_deployments_per_month=p.max_deployments_per_month,
            included_build_minutes=p.included_build_minutes,
            included_agent_tokens=p.included_agent_tokens,
            custom_domains=p.custom_domains,
            priority_support=p.priority_support,
            overage_prices={
                "build_minutes": p.overage_build_minute_price,
                "storage_gb": p.overage_storage_gb_price,
                "bandwidth_gb": p.overage_bandwidth_gb_price,
                "agent_tokens": p.overage_agent_token_price,
                "api_requests": p.overage_api_request_price,
            },
            features=by_plan.get(p.id, []),
        )
        for p in plans
    ]


async def _plan_by_slug(session: AsyncSession, slug: str) -> Plan:
    plan = (await session.scalars(select(Plan).where(Plan.slug == slug, Plan.is_active))).first()
    if plan is None:
        raise ValidationFailed(f"Unknown plan {slug!r}", field="plan")
    if plan.price_monthly is None:
        raise ValidationFailed(
            f"The {plan.name} plan has custom pricing; contact sales to subscribe", field="plan"
        )
    return plan


# --------------------------------------------------------------------------- subscription


async def _live_subscription(
    session: AsyncSession, organization_id: uuid.UUID, *, lock: bool = False
) -> Subscription | None:
    query = select(Subscription).where(
        Subscription.organization_id == organization_id,
        Subscription.status.in_(LIVE_SUBSCRIPTION_STATUSES),
    )
    if lock:
        query = query.with_for_update()
    return (await session.scalars(query)).first()


async def _subscription_out(session: AsyncSession, sub: Subscription) -> SubscriptionOut:
    plan = await session.get_one(Plan, sub.plan_id)
    pending = await session.get(Plan, sub.pending_plan_id) if sub.pending_plan_id else None
    return SubscriptionOut(
        id=sub.id,
        plan=plan.slug,
        pending_plan=pending.slug if pending else None,
        pending_change_at=sub.pending_change_at,
        status=sub.status,  # type: ignore[arg-type]
        current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end,
        trial_end=sub.trial_end,
        cancel_at_period_end=sub.cancel_at_period_end,
        cancelled_at=sub.cancelled_at,
    )


async def get_subscription(session: AsyncSession, organization_id: uuid.UUID) -> SubscriptionOut:
    sub = await _live_subscription(session, organization_id)
    if sub is None:
        latest = (
            await session.scalars(
                select(Subscription)
                .where(Subscription.organization_id == organization_id)
                .order_by(Subscription.created_at.desc())
                .limit(1)
            )
        ).first()
        if latest is None:
            raise NotFound("No subscription: the organization is on the Free plan")
        sub = latest
    return await _subscription_out(session, sub)


async def _has_default_card(session: AsyncSession, organization_id: uuid.UUID) -> bool:
    found = await session.scalar(
        select(func.count()).where(
            PaymentMethod.organization_id == organization_id,
            PaymentMethod.is_default,
            PaymentMethod.detached_at.is_(None),
        )
    )
    return bool(found)


async def create_subscription(
    session: AsyncSession,
    principal: Principal,
    request: Request,
    settings: Settings,
    body: SubscriptionCreate,
) -> SubscriptionOut:
    org_id = principal.organization_id
    plan = await _plan_by_slug(session, body.plan)
    current = await _live_subscription(session, org_id, lock=True)
    if current is not None:
        current_plan = await session.get_one(Plan, current.plan_id)
        if current_plan.slug != "free":
            raise Conflict(
                "The organization already has a subscription; change it with PATCH",
                subscription_id=str(current.id),
            )
        # Leaving Free is a plan change on the existing subscription.
        return await update_subscription(
            session, principal, request, settings, SubscriptionUpdate(plan=body.plan)
        )
    needs_card = (
        settings.stripe_api_key is not None
        and (plan.price_monthly or 0) > 0
        and body.trial_days == 0
    )
    if needs_card and not await _has_default_card(session, org_id):
        raise PaymentRequired(
            f"Add a payment method before subscribing to {plan.name}",
            limit="payment_method",
            plan=plan.slug,
        )
    now = datetime.now(UTC)
    sub = Subscription(
        organization_id=org_id,
        plan_id=plan.id,
        status="trialing" if body.trial_days else "active",
        current_period_start=now,
        current_period_end=Period.containing(now).end,
        trial_end=now + timedelta(days=body.trial_days) if body.trial_days else None,
    )
    session.add(sub)
    await session.flush()
    await write_audit(
        session,
        principal,
        request,
        "subscription.create",
        "subscription",
        sub.id,
        new={"plan": plan.slug, "status": sub.status, "trial_days": body.trial_days},
    )
    return await _subscription_out(session, sub)


async def update_subscription(
    session: AsyncSession,
    principal: Principal,
    request: Request,
    settings: Settings,
    body: SubscriptionUpdate,
) -> SubscriptionOut:
    if body.plan is None and body.cancel_at_period_end is None:
        raise ValidationFailed("Nothing to change: give plan and/or cancel_at_period_end")
    sub = await _live_subscription(session, principal.organization_id, lock=True)
    if sub is None:
        raise NotFound("No subscription to change; subscribe with POST first")
    old = {"plan_id": str(sub.plan_id), "cancel_at_period_end": sub.cancel_at_period_end}
    if body.plan is not None:
        plan = await _plan_by_slug(session, body.plan)
        if plan.id != sub.plan_id:
            if (
                settings.stripe_api_key is not None
                and (plan.price_monthly or 0) > 0
                and sub.status != "trialing"
                and not await _has_default_card(session, principal.organization_id)
            ):
                raise PaymentRequired(
                    f"Add a payment method before moving to {plan.name}",
                    limit="payment_method",
                    plan=plan.slug,
                )
            # The new plan and its limits apply now; the period's invoice charges each plan
            # for the time it was in effect.
            await change_plan(session, sub, plan.id)
    if body.cancel_at_period_end is not None:
        sub.cancel_at_period_end = body.cancel_at_period_end
        sub.cancelled_at = datetime.now(UTC) if body.cancel_at_period_end else None
    await session.flush()
    await write_audit(
        session,
        principal,
        request,
        "subscription.update",
        "subscription",
        sub.id,
        old=old,
        new={"plan_id": str(sub.plan_id), "cancel_at_period_end": sub.cancel_at_period_end},
    )
    return await _subscription_out(session, sub)


# --------------------------------------------------------------------------- payment methods


def _pm_out(pm: PaymentMethod) -> PaymentMethodOut:
    return PaymentMethodOut.model_validate(pm, from_attributes=True)


async def list_payment_methods(
    session: AsyncSession, organization_id: uuid.UUID
) -> list[PaymentMethodOut]:
    rows = await session.scalars(
        select(PaymentMethod)
        .where(
            PaymentMethod.organization_id == organization_id, PaymentMethod.detached_at.is_(None)
        )
        .order_by(PaymentMethod.is_default.desc(), PaymentMethod.created_at.desc())
    )
    return [_pm_out(pm) for pm in rows]


async def _ensure_customer(
    session: AsyncSession, client: StripeBilling, organization_id: uuid.UUID
) -> str:
    org = (
        await session.scalars(
            select(Organization).where(Organization.id == organization_id).with_for_update()
        )
    ).one()
    if org.stripe_customer_id is None:
        org.stripe_customer_id = await client.ensure_customer(
            organization_id=str(org.id), name=org.name, email=org.billing_email
        )
    return org.stripe_customer_id


async def attach_payment_method(
    session: AsyncSession,
    principal: Principal,
    request: Request,
    settings: Settings,
    body: PaymentMethodCreate,
) -> PaymentMethodOut:
    client = stripe_for(settings)
    if client is None:
        raise ProviderUnavailable(
            "Stripe is not configured; invoices are issued for manual collection"
        )
    org_id = principal.organization_id
    try:
        customer_id = await _ensure_customer(session, client, org_id)
        card = await client.attach_card(
            customer_id=customer_id,
            payment_method_id=body.payment_method_id,
            make_default=False,
        )
    except (PaymentDeclined, StripeRequestRejected) as error:
        raise ValidationFailed(str(error), field="payment_method_id") from error
    except stripe.StripeError as error:
        raise ProviderUnavailable("Stripe could not be reached; try again") from error
    existing = await list_payment_methods(session, org_id)
    make_default = body.make_default or not existing
    if make_default:
        await session.execute(
            update(PaymentMethod)
            .where(PaymentMethod.organization_id == org_id, PaymentMethod.is_default)
            .values(is_default=False)
        )
        await session.flush()
    pm = PaymentMethod(
        organization_id=org_id,
        stripe_payment_method_id=card.payment_method_id,
        type="card",
        brand=card.brand,
        last4=card.last4,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        country=(card.country or None) and card.country[:2],
        is_default=make_default,
    )
    session.add(pm)
    await session.flush()
    if make_default:
        try:
            await client.set_default_card(
                customer_id=customer_id, payment_method_id=card.payment_method_id
            )
        except stripe.StripeError as error:
            raise ProviderUnavailable("Stripe could not be reached; try again") from error
    await write_audit(
        session,
        principal,
        request,
        "payment_method.attach",
        "payment_method",
        pm.id,
        new={"brand": pm.brand, "last4": pm.last4, "is_default": pm.is_default},
    )
    await session.refresh(pm)
    return _pm_out(pm)


async def delete_payment_method(
    session: AsyncSession,
    principal: Principal,
    request: Request,
    settings: Settings,
    payment_method_id: uuid.UUID,
) -> None:
    org_id = principal.organization_id
    pm = (
        await session.scalars(
            select(PaymentMethod)
            .where(
                PaymentMethod.id == payment_method_id,
                PaymentMethod.organization_id == org_id,
                PaymentMethod.detached_at.is_(None),
            )
            .with_for_update()
        )
    ).first()
    if pm is None:
        raise NotFound("Payment method not found")
    client = stripe_for(settings)
    if client is not None:
        try:
            await client.detach_card(pm.stripe_payment_method_id)
        except (stripe.StripeError, StripeRequestRejected) as error:
            raise ProviderUnavailable("Stripe could not detach the card; try again") from error
    was_default = pm.is_default
    pm.is_default = False
    pm.detached_at = datetime.now(UTC)
    await session.flush()
    if was_default:
        successor = (
            await session.scalars(
                select(PaymentMethod)
                .where(PaymentMethod.organization_id == org_id, PaymentMethod.detached_at.is_(None))
                .order_by(PaymentMethod.created_at.desc())
                .limit(1)
            )
        ).first()
        if successor is not None:
            successor.is_default = True
    await write_audit(
        session,
        principal,
        request,
        "payment_method.delete",
        "payment_method",
        pm.id,
        old={"brand": pm.brand, "last4": pm.last4, "is_default": was_default},
    )


# --------------------------------------------------------------------------- usage, invoices


async def usage(session: AsyncSession, organization_id: uuid.UUID, period: Period) -> UsageOut:
    rows = (
        await session.execute(
            select(UsageRecord.usage_type, UsageRecord.project_id, func.sum(UsageRecord.quantity))
            .where(UsageRecord.organization_id == organization_id, UsageRecord.period == period.key)
            .group_by(UsageRecord.usage_type, UsageRecord.project_id)
            .order_by(UsageRecord.usage_type, UsageRecord.project_id)
        )
    ).all()
    totals: dict[str, Decimal] = {}
    by_project: list[UsageByProject] = []
    for usage_type, project_id, quantity in rows:
        totals[usage_type] = totals.get(usage_type, Decimal(0)) + Decimal(quantity)
        by_project.append(
            UsageByProject(project_id=project_id, usage_type=usage_type, quantity=quantity)
        )
    return UsageOut(
        period=period.key,
        by_type=[
            UsageByType(usage_type=t, unit=USAGE_UNITS.get(t, "units"), quantity=q)
            for t, q in sorted(totals.items())
        ],
        by_project=by_project,
    )


def invoice_out(invoice: Invoice) -> InvoiceOut:
    return InvoiceOut(
        id=invoice.id,
        invoice_number=invoice.invoice_number,
        period=Period.containing(invoice.period_start).key,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        status=invoice.status,
        currency=invoice.currency,
        subtotal=invoice.subtotal,
        tax_rate=invoice.tax_rate,
        tax=invoice.tax,
        total=invoice.total,
        amount_paid=invoice.amount_paid,
        collection_method=invoice.collection_method,
        issued_at=invoice.issued_at,
        due_at=invoice.due_at,
        paid_at=invoice.paid_at,
    )


async def get_invoice(
    session: AsyncSession, organization_id: uuid.UUID, invoice_id: uuid.UUID
) -> InvoiceDetail:
    invoice = (
        await session.scalars(
            select(Invoice).where(
                Invoice.id == invoice_id, Invoice.organization_id == organization_id
            )
        )
    ).first()
    if invoice is None:
        raise NotFound("Invoice not found")
    payments = (
        await session.scalars(
            select(Payment).where(Payment.invoice_id == invoice.id).order_by(Payment.attempted_at)
        )
    ).all()
    return InvoiceDetail(
        **invoice_out(invoice).model_dump(),
        line_items=[InvoiceLineOut.model_validate(line) for line in invoice.line_items],
        credit_carried_forward=invoice.credit_carried_forward,
        payments=[
            {
                "id": str(p.id),
                "status": p.status,
                "amount": f"{p.amount:.2f}",
                "attempt": p.attempt_number,
                "failure_message": p.failure_message,
                "attempted_at": p.attempted_at.isoformat(),
                "paid_at": p.paid_at.isoformat() if p.paid_at else None,
            }
            for p in payments
        ],
    )


async def run_billing(
    session: AsyncSession,
    principal: Principal,
    request: Request,
    temporal: Client,
    body: BillingRunRequest,
) -> BillingRunOut:
    """Close a period now for the caller's organization (same workflow ID as the schedule's)."""
    org_id = principal.organization_id
    if body.period is not None:
        period = Period.parse(body.period)
    else:
        sub = await _live_subscription(session, org_id)
        if sub is None:
            raise NotFound("No subscription to bill")
        # The subscription's open period once it has ended (a missed run), else the last month.
        period = Period.containing(sub.current_period_start)
        if period.end > datetime.now(UTC):
            period = Period.containing(datetime.now(UTC)).previous()
    now = datetime.now(UTC)
    if period.start > now:
        raise ValidationFailed("Cannot bill a period that has not started", field="period")
    if period.end > now:
        raise PeriodNotEnded(
            f"Period {period.key} has not ended: it is invoiced from {period.end.isoformat()},"
            " with each plan charged for the time it was in effect",
            period=period.key,
            ends_at=period.end.isoformat(),
        )
    workflow_id, run_id = await start_billing_workflow(
        temporal, organization_id=org_id, period=period, trigger="api"
    )
    if run_id is not None:
        await record_billing_execution(
            session,
            organization_id=org_id,
            period=period,
            workflow_id=workflow_id,
            run_id=run_id,
            trigger="api",
        )
    await write_audit(
        session,
        principal,
        request,
        "billing.run",
        "billing_period",
        None,
        new={"period": period.key, "workflow_id": workflow_id, "started": run_id is not None},
    )
    return BillingRunOut(workflow_id=workflow_id, period=period.key, started=run_id is not None)


# --------------------------------------------------------------------------- webhooks


def verify_stripe_event(
    settings: Settings, payload: bytes, signature: str | None
) -> dict[str, Any]:
    """The event of a correctly signed, recent delivery; BadWebhook (400) otherwise."""
    if settings.stripe_webhook_secret is None:
        raise BadWebhook("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET)")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"),
            signature,
            settings.stripe_webhook_secret.get_secret_value(),
            tolerance=WEBHOOK_TOLERANCE_SECONDS,
        )
        event = json.loads(payload)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as error:
        raise BadWebhook(f"Signature verification failed: {error}") from error
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise BadWebhook("Not a Stripe event")
    return event


async def handle_stripe_webhook(
    session: AsyncSession, settings: Settings, payload: bytes, signature: str | None
) -> WebhookAck:
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
        return WebhookAck(duplicate=True, event_type=event_type)
    organization_id, outcome = await _apply_stripe_event(session, event_type, event["id"], obj)
    await session.execute(
        update(WebhookPayload)
        .where(WebhookPayload.id == delivery_id)
        .values(status=outcome, processed_at=datetime.now(UTC), organization_id=organization_id)
    )
    return WebhookAck(event_type=event_type)


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
    subscription = await _live_subscription(session, invoice.organization_id, lock=True)
    if event_type in ("invoice.paid", "invoice.payment_succeeded"):
        if invoice.status != "paid":
            invoice.status = "paid"
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
                status="succeeded",
                stripe_charge_id=obj.get("charge") if isinstance(obj.get("charge"), str) else None,
                idempotency_key=f"stripe-event:{event_id}",
                paid_at=now,
            )
            .on_conflict_do_nothing()
        )
        if subscription is not None and subscription.status == "past_due":
            subscription.status = "active"
    elif event_type == "invoice.payment_failed":
        if subscription is not None and subscription.status == "active":
            subscription.status = "past_due"
    elif event_type == "invoice.voided":
        invoice.status = "void"
        invoice.voided_at = now
    elif event_type == "invoice.marked_uncollectible":
        invoice.status = "uncollectible"
    else:
        return invoice.organization_id, "ignored"
    return invoice.organization_id, "processed"
