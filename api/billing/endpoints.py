"""/v1 routes for plans, the subscription, payment methods, usage, invoices and Stripe webhooks."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.billing import service
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
    ADMIN,
    BILLING_READ,
    Principal,
    SessionDep,
    SettingsDep,
    TemporalDep,
    require_scope,
)
from api.pagination import CursorParam, LimitParam, Page, build_page, paginate
from core.billing import limits
from core.billing.periods import Period
from core.runs import build_slots
from db.models.billing import Invoice

log = logging.getLogger(__name__)

router = APIRouter(tags=["billing"])

Reader = Annotated[Principal, Depends(require_scope(BILLING_READ))]
Admin = Annotated[Principal, Depends(require_scope(ADMIN))]


@router.get("/plans", summary="Public plan catalogue with limits and overage prices")
async def list_plans(session: SessionDep) -> list[PlanOut]:
    return await service.list_plans(session)


@router.get("/billing/subscription", responses={404: {"description": "No subscription (Free)"}})
async def get_subscription(session: SessionDep, principal: Reader) -> SubscriptionOut:
    return await service.get_subscription(session, principal.organization_id)


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
    subscription = await service.create_subscription(session, principal, request, settings, body)
    await _apply_plan_to_build_slots(session, request, principal.organization_id)
    return subscription


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
    subscription = await service.update_subscription(session, principal, request, settings, body)
    await _apply_plan_to_build_slots(session, request, principal.organization_id)
    return subscription


async def _apply_plan_to_build_slots(
    session: AsyncSession, request: Request, organization_id: uuid.UUID
) -> None:
    """The plan's build-slot limit applies with the change: runs queued behind the old limit
    are promoted in the same transaction, and told once it has committed. A grant that cannot be
    told now stays pending (the organization's next claim or release, or a retried request,
    delivers it); the plan change itself has succeeded either way."""
    grants = await limits.apply_build_slot_limit(session, organization_id)
    await session.commit()
    if not grants:
        return
    try:
        temporal = await request.app.state.temporal.get()
        await build_slots.deliver_grants(
            temporal, request.app.state.session_maker, str(organization_id), grants
        )
    except Exception:  # the change is committed; delivery is retried by the next touch
        log.warning("build-slot grants of %s left pending", organization_id, exc_info=True)


@router.get("/billing/payment-methods")
async def list_payment_methods(session: SessionDep, principal: Reader) -> list[PaymentMethodOut]:
    return await service.list_payment_methods(session, principal.organization_id)


@router.post("/billing/payment-methods", status_code=status.HTTP_201_CREATED)
async def attach_payment_method(
    body: PaymentMethodCreate,
    session: SessionDep,
    principal: Admin,
    settings: SettingsDep,
    request: Request,
) -> PaymentMethodOut:
    return await service.attach_payment_method(session, principal, request, settings, body)


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
    await service.delete_payment_method(session, principal, request, settings, payment_method_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/billing/usage", summary="Usage of a period by type and by project")
async def get_usage(
    session: SessionDep,
    principal: Reader,
    period: Annotated[PeriodText | None, Query(description="YYYY-MM; default: this month")] = None,
) -> UsageOut:
    month = Period.parse(period) if period else Period.containing(datetime.now(UTC))
    return await service.usage(session, principal.organization_id, month)


@router.get("/billing/invoices")
async def list_invoices(
    session: SessionDep,
    principal: Reader,
    cursor: CursorParam = None,
    limit: LimitParam = 50,
) -> Page[InvoiceOut]:
    query = paginate(
        select(Invoice).where(Invoice.organization_id == principal.organization_id),
        Invoice.period_start,
        Invoice.id,
        cursor=cursor,
        limit=limit,
    )
    rows = (await session.scalars(query)).all()
    return build_page(
        rows,
        limit=limit,
        key=lambda inv: (inv.period_start, inv.id),
        to_item=service.invoice_out,
    )


@router.get("/billing/invoices/{invoice_id}")
async def get_invoice(
    invoice_id: uuid.UUID, session: SessionDep, principal: Reader
) -> InvoiceDetail:
    return await service.get_invoice(session, principal.organization_id, invoice_id)


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
    return await service.run_billing(
        session, principal, request, temporal, body or BillingRunRequest()
    )


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
    return await service.handle_stripe_webhook(session, settings, payload, stripe_signature)
