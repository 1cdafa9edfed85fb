"""Payload models of the billing workflows and activities (no I/O imports: both sides use them)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

# Days after the first failed charge on which payment is retried before the subscription ends.
DUNNING_RETRY_DAYS = (1, 3, 7)
BILLING_WORKFLOW_KIND = "billing"


def billing_workflow_id(organization_id: str, period: str) -> str:
    return f"billing-{organization_id}-{period}"


class BillingInput(BaseModel):
    organization_id: str
    period: str  # YYYY-MM, the calendar month being closed
    dunning_retry_days: list[int] = Field(default_factory=lambda: list(DUNNING_RETRY_DAYS))
    trigger: str = "schedule"  # schedule | api | backfill


class InvoiceRequest(BaseModel):
    organization_id: str
    period: str
    # The workflow's time when it asked: a period is invoiced only once it has ended by then.
    as_of: datetime | None = None


class InvoiceSummary(BaseModel):
    """What the workflow needs to know about the (organization, period) invoice."""

    invoice_id: str | None = None
    invoice_number: str | None = None
    total: str = "0.00"
    status: str = "skipped"  # skipped | draft | open | paid | uncollectible | void
    created: bool = False
    collect_with_stripe: bool = False
    stripe_invoice_id: str | None = None
    reason: str | None = None


class StripeInvoiceRequest(BaseModel):
    invoice_id: str


class StripeInvoiceRef(BaseModel):
    invoice_id: str
    stripe_invoice_id: str
    stripe_customer_id: str


class ChargeRequest(BaseModel):
    invoice_id: str
    stripe_invoice_id: str
    invoice_number: str
    attempt: int


class ChargeResult(BaseModel):
    paid: bool
    charge_id: str | None = None
    amount_paid_cents: int = 0
    failure_message: str | None = None


class PaymentRecord(BaseModel):
    invoice_id: str
    attempt: int
    charge: ChargeResult
    next_retry_in_days: int | None = None


class EndSubscriptionRequest(BaseModel):
    invoice_id: str
    organization_id: str


class CloseExecutionRequest(BaseModel):
    """A billing run that ended without a result: its workflow_executions row is closed."""

    organization_id: str
    period: str
    status: str = "failed"  # failed | cancelled
    error: str | None = None


class BillingResult(BaseModel):
    organization_id: str
    period: str
    invoice_id: str | None = None
    invoice_number: str | None = None
    total: str = "0.00"
    status: str = "skipped"
    charge_attempts: int = 0
    subscription_cancelled: bool = False


class BillingCycleInput(BaseModel):
    """Scheduled fan-out; period None = the month before the scheduled time."""

    period: str | None = None
    page_size: int = 500


class StartBillingRunsRequest(BaseModel):
    period: str
    after_organization_id: str | None = None
    limit: int = 500


class StartBillingRunsResult(BaseModel):
    started: int = 0
    already_started: int = 0
    last_organization_id: str | None = None
    done: bool = True


class BillingCycleResult(BaseModel):
    period: str
    started: int = 0
    already_started: int = 0
