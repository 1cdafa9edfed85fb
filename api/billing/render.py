"""Billing's domain objects rendered as the API's response schemas."""

from __future__ import annotations

from api.billing.schemas import (
    BillingRunOut,
    InvoiceDetail,
    InvoiceLineOut,
    InvoiceOut,
    PaymentMethodOut,
    PlanFeatureOut,
    PlanOut,
    SubscriptionOut,
    UsageByProject,
    UsageByType,
    UsageOut,
    WebhookAck,
)
from core.billing.periods import Period
from core.billing.plans import CataloguePlan
from core.billing.pricing import USAGE_UNITS, overage_prices
from core.billing.statements import BillingRun, InvoiceStatement, PeriodUsage
from core.billing.subscriptions import SubscriptionView
from core.billing.webhooks import WebhookOutcome
from db.models.billing import Invoice, PaymentMethod


def plan_out(entry: CataloguePlan) -> PlanOut:
    p = entry.plan
    return PlanOut(
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
        overage_prices=overage_prices(p),
        features=[
            PlanFeatureOut(
                feature_key=feature.feature_key,
                limit_value=feature.limit_value,
                enabled=feature.enabled,
            )
            for feature in entry.features
        ],
    )


def subscription_out(view: SubscriptionView) -> SubscriptionOut:
    sub = view.subscription
    return SubscriptionOut(
        id=sub.id,
        plan=view.plan_slug,
        pending_plan=view.pending_plan_slug,
        pending_change_at=sub.pending_change_at,
        status=sub.status,
        current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end,
        trial_end=sub.trial_end,
        cancel_at_period_end=sub.cancel_at_period_end,
        cancelled_at=sub.cancelled_at,
    )


def payment_method_out(pm: PaymentMethod) -> PaymentMethodOut:
    return PaymentMethodOut.model_validate(pm, from_attributes=True)


def usage_out(usage: PeriodUsage) -> UsageOut:
    return UsageOut(
        period=usage.period.key,
        by_type=[
            UsageByType(usage_type=t, unit=USAGE_UNITS.get(t, "units"), quantity=q)
            for t, q in usage.totals.items()
        ],
        by_project=[
            UsageByProject(
                project_id=row.project_id, usage_type=row.usage_type, quantity=row.quantity
            )
            for row in usage.by_project
        ],
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


def invoice_detail(statement: InvoiceStatement) -> InvoiceDetail:
    invoice = statement.invoice
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
            for p in statement.payments
        ],
    )


def billing_run_out(run: BillingRun) -> BillingRunOut:
    return BillingRunOut(workflow_id=run.workflow_id, period=run.period.key, started=run.started)


def webhook_ack(outcome: WebhookOutcome) -> WebhookAck:
    return WebhookAck(duplicate=outcome.duplicate, event_type=outcome.event_type)
