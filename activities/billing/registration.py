"""Billing task queue: the billing workflows, their activities, and the Stripe client built once."""

from __future__ import annotations

from activities.billing.invoicing import BillingActivities
from activities.billing.schedules import BillingScheduleActivities
from activities.deps import Registration, WorkerDeps
from forgeline.settings import BILLING_TASK_QUEUE
from infra.stripe_billing import StripeBilling
from workflows.billing import BillingCycleWorkflow, BillingWorkflow


def registration(deps: WorkerDeps) -> Registration:
    stripe = StripeBilling.from_settings(deps.settings)
    billing = BillingActivities(
        deps.session_maker, stripe, deps.settings.tax_rate, deps.temporal, deps.settings
    )
    fan_out = BillingScheduleActivities(deps.session_maker, deps.temporal)
    return Registration(
        task_queue=BILLING_TASK_QUEUE,
        workflows=[BillingWorkflow, BillingCycleWorkflow],
        activities=[
            billing.create_invoice,
            billing.push_invoice_to_stripe,
            billing.charge_invoice,
            billing.record_payment,
            billing.end_subscription_for_nonpayment,
            billing.close_failed_execution,
            fan_out.start_due_billing_runs,
        ],
        on_shutdown=[stripe.close] if stripe is not None else [],
    )
