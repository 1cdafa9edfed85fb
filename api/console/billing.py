"""Console billing pages: the plan in effect, this period's usage, invoices and one invoice."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.console.pages import error_page, page, page_user, parse_id
from api.deps import SessionDep
from core.accounts.scopes import BILLING_READ
from core.billing import statements, subscriptions
from core.billing.limits import effective_plan
from core.billing.periods import Period
from forgeline.errors import DomainError, NotFound

router = APIRouter(include_in_schema=False)
_INVOICES = 24


@router.get("/billing")
async def billing_page(request: Request, session: SessionDep) -> Response:
    user = await page_user(request, session, BILLING_READ)
    org = user.principal.organization_id
    try:
        plan = await effective_plan(session, org)
        try:
            subscription = (await subscriptions.current(session, org)).subscription
        except NotFound:
            subscription = None  # never subscribed: the Free plan
        period = Period.containing(datetime.now(UTC))
        usage = await statements.usage(session, org, period)
        invoices = (await statements.invoices_page(session, org, cursor=None, limit=_INVOICES))[
            :_INVOICES
        ]
    except DomainError as exc:
        return error_page(request, user, exc)
    context: dict[str, Any] = {
        "user": user,
        "plan": plan,
        "subscription": subscription,
        "period": period,
        "usage": usage,
        "invoices": invoices,
    }
    return page(request, "billing.html", context)


@router.get("/billing/invoices/{invoice_id}")
async def invoice_page(request: Request, invoice_id: str, session: SessionDep) -> Response:
    user = await page_user(request, session, BILLING_READ)
    try:
        statement = await statements.invoice_statement(
            session, user.principal.organization_id, parse_id(invoice_id)
        )
    except DomainError as exc:
        return error_page(request, user, exc)
    context = {"user": user, "invoice": statement.invoice, "payments": statement.payments}
    return page(request, "invoice.html", context)
