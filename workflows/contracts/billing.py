"""Every activity of the billing domain: its registered name, input, output and the errors that
are never retried. The names are part of recorded histories and never change.

Pure: importable inside the workflow sandbox.
"""

from __future__ import annotations

from workflows.billing_models import (
    ChargeRequest,
    ChargeResult,
    CloseExecutionRequest,
    EndSubscriptionRequest,
    InvoiceRequest,
    InvoiceSummary,
    PaymentRecord,
    StartBillingRunsRequest,
    StartBillingRunsResult,
    StripeInvoiceRef,
    StripeInvoiceRequest,
)
from workflows.contract import ActivityContract

# Bad data (an unparsable period, a missing row) and an unconfigured Stripe end the attempt.
DB_NON_RETRYABLE = ("ValueError", "LookupError")
# A declined card is retried by the dunning schedule (a new attempt key), never by Temporal.
STRIPE_NON_RETRYABLE = ("PaymentDeclined", "StripeRequestRejected", "LookupError")
# CREATE_INVOICE's error when the workflow's clock says the period is still open (raised as a
# non-retryable error by the activity itself).
PERIOD_NOT_ENDED = "PeriodNotEnded"

# --- the period's invoice and its bookkeeping (Postgres) ------------------------------------------

CREATE_INVOICE = ActivityContract(
    "create_invoice", InvoiceRequest, InvoiceSummary, non_retryable=DB_NON_RETRYABLE
)
RECORD_PAYMENT = ActivityContract(
    "record_payment", PaymentRecord, type(None), non_retryable=DB_NON_RETRYABLE
)
END_SUBSCRIPTION_FOR_NONPAYMENT = ActivityContract(
    "end_subscription_for_nonpayment",
    EndSubscriptionRequest,
    type(None),
    non_retryable=DB_NON_RETRYABLE,
)
CLOSE_FAILED_EXECUTION = ActivityContract(
    "close_failed_execution", CloseExecutionRequest, type(None), non_retryable=DB_NON_RETRYABLE
)

# --- Stripe ---------------------------------------------------------------------------------------

PUSH_INVOICE_TO_STRIPE = ActivityContract(
    "push_invoice_to_stripe",
    StripeInvoiceRequest,
    StripeInvoiceRef,
    non_retryable=STRIPE_NON_RETRYABLE,
)
CHARGE_INVOICE = ActivityContract(
    "charge_invoice", ChargeRequest, ChargeResult, non_retryable=STRIPE_NON_RETRYABLE
)

# --- the monthly fan-out --------------------------------------------------------------------------

START_DUE_BILLING_RUNS = ActivityContract(
    "start_due_billing_runs",
    StartBillingRunsRequest,
    StartBillingRunsResult,
    non_retryable=("ValueError",),
)
