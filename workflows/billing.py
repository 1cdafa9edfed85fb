"""BillingWorkflow closes one (organization, period): invoice, charge, dunning.
BillingCycleWorkflow is what the monthly Schedule starts: one BillingWorkflow per subscription."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from workflows.billing_models import (
        BillingCycleInput,
        BillingCycleResult,
        BillingInput,
        BillingResult,
        ChargeRequest,
        ChargeResult,
        CloseExecutionRequest,
        EndSubscriptionRequest,
        InvoiceRequest,
        InvoiceSummary,
        PaymentRecord,
        StartBillingRunsRequest,
        StripeInvoiceRef,
        StripeInvoiceRequest,
    )
    from workflows.contracts import billing as contracts

DB_TIMEOUT = timedelta(seconds=60)
# Up to ~20 minutes of attempts: a database restart is ridden out; bad data ends the attempt
# (each contract names its non-retryable errors).
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=45,
)
# Stripe calls: SDK retries are off, Temporal retries with the same idempotency keys. The heartbeat
# timeout lets a killed worker's attempt be retried in seconds, not after start_to_close.
STRIPE_TIMEOUT = timedelta(minutes=2)
STRIPE_HEARTBEAT = timedelta(seconds=5)
STRIPE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=20,
)

# A run that fails or is cancelled closes its workflow_executions row (added after histories
# were recorded; replays of runs that failed without it take the old path).
CLOSE_ON_FAILURE_PATCH = "billing-execution-closed-on-failure"
# The invoice step is told the workflow's time, so a period that has not ended is refused by the
# workflow's clock (added after histories were recorded; older runs let the activity use its own).
PERIOD_ENDED_PATCH = "billing-invoice-after-period-end"

SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


def _declined(error: ActivityError) -> bool:
    cause = error.cause
    return isinstance(cause, ApplicationError) and cause.type == "PaymentDeclined"


@workflow.defn
class BillingWorkflow:
    """Roll up usage into the period's invoice, charge it once, retry on the dunning schedule."""

    def __init__(self) -> None:
        self._status = "starting"
        self._attempts = 0

    @workflow.query
    def status(self) -> str:
        return self._status

    @workflow.run
    async def run(self, params: BillingInput) -> BillingResult:
        try:
            return await self._run(params)
        except (FailureError, asyncio.CancelledError) as error:
            # Only on this failure path, so recorded successful histories replay unchanged.
            if workflow.patched(CLOSE_ON_FAILURE_PATCH):
                await self._close_failed(params, error)
            raise

    async def _close_failed(self, params: BillingInput, error: BaseException) -> None:
        cancelled = isinstance(error, asyncio.CancelledError) or (
            isinstance(error, FailureError) and isinstance(error.cause, CancelledError)
        )
        self._status = "cancelled" if cancelled else "failed"
        cause = error.cause if isinstance(error, FailureError) else None
        message = f"{error}: {cause}" if cause is not None else str(error) or type(error).__name__
        try:
            await contracts.CLOSE_FAILED_EXECUTION.execute(
                CloseExecutionRequest(
                    organization_id=params.organization_id,
                    period=params.period,
                    status=self._status,
                    error=message,
                ),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
            )
        except ActivityError:
            # The original failure is what the operator must see, not the bookkeeping's.
            workflow.logger.warning("could not close the workflow_executions row")

    async def _run(self, params: BillingInput) -> BillingResult:
        result = BillingResult(organization_id=params.organization_id, period=params.period)
        self._status = "invoicing"
        as_of = workflow.now() if workflow.patched(PERIOD_ENDED_PATCH) else None
        summary: InvoiceSummary = await contracts.CREATE_INVOICE.execute(
            InvoiceRequest(
                organization_id=params.organization_id, period=params.period, as_of=as_of
            ),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        result.invoice_id = summary.invoice_id
        result.invoice_number = summary.invoice_number
        result.total = summary.total
        result.status = summary.status
        if summary.invoice_id is None or not summary.collect_with_stripe:
            # Nothing to invoice, nothing to collect, already paid, or manual collection.
            self._status = summary.status
            return result
        invoice_id, number = summary.invoice_id, summary.invoice_number or ""

        self._status = "pushing_to_stripe"
        ref: StripeInvoiceRef = await contracts.PUSH_INVOICE_TO_STRIPE.execute(
            StripeInvoiceRequest(invoice_id=invoice_id),
            start_to_close_timeout=STRIPE_TIMEOUT,
            heartbeat_timeout=STRIPE_HEARTBEAT,
            retry_policy=STRIPE_RETRY,
        )

        first_failure: datetime | None = None
        retry_days = [0, *params.dunning_retry_days]
        for attempt, day in enumerate(retry_days):
            if first_failure is not None:
                self._status = f"dunning_wait_day_{day}"
                wait = first_failure + timedelta(days=day) - workflow.now()
                if wait > timedelta(0):
                    await workflow.sleep(wait)
            self._status = f"charging_attempt_{attempt}"
            self._attempts = attempt + 1
            charge = await self._charge(ref, number, attempt)
            next_day = retry_days[attempt + 1] if attempt + 1 < len(retry_days) else None
            await contracts.RECORD_PAYMENT.execute(
                PaymentRecord(
                    invoice_id=invoice_id,
                    attempt=attempt,
                    charge=charge,
                    next_retry_in_days=next_day,
                ),
                start_to_close_timeout=DB_TIMEOUT,
                retry_policy=DB_RETRY,
            )
            result.charge_attempts = attempt + 1
            if charge.paid:
                result.status = self._status = "paid"
                return result
            if first_failure is None:
                first_failure = workflow.now()

        self._status = "cancelling_for_nonpayment"
        await contracts.END_SUBSCRIPTION_FOR_NONPAYMENT.execute(
            EndSubscriptionRequest(invoice_id=invoice_id, organization_id=params.organization_id),
            start_to_close_timeout=DB_TIMEOUT,
            retry_policy=DB_RETRY,
        )
        result.status = self._status = "uncollectible"
        result.subscription_cancelled = True
        return result

    async def _charge(self, ref: StripeInvoiceRef, number: str, attempt: int) -> ChargeResult:
        try:
            return await contracts.CHARGE_INVOICE.execute(
                ChargeRequest(
                    invoice_id=ref.invoice_id,
                    stripe_invoice_id=ref.stripe_invoice_id,
                    invoice_number=number,
                    attempt=attempt,
                ),
                start_to_close_timeout=STRIPE_TIMEOUT,
                heartbeat_timeout=STRIPE_HEARTBEAT,
                retry_policy=STRIPE_RETRY,
            )
        except ActivityError as error:
            if not _declined(error):
                raise
            cause = error.cause
            message = cause.message if isinstance(cause, ApplicationError) else "declined"
            return ChargeResult(paid=False, failure_message=message)


@workflow.defn
class BillingCycleWorkflow:
    """Started by the monthly schedule (or a backfill): one BillingWorkflow per subscription.

    Starts go through an activity in pages, so 10k organizations cost ~20 activities of history,
    not 10k child workflows; BillingWorkflow IDs make every start idempotent.
    """

    @workflow.run
    async def run(self, params: BillingCycleInput) -> BillingCycleResult:
        period = params.period or self._previous_month()
        result = BillingCycleResult(period=period)
        cursor: str | None = None
        while True:
            page = await contracts.START_DUE_BILLING_RUNS.execute(
                StartBillingRunsRequest(
                    period=period, after_organization_id=cursor, limit=params.page_size
                ),
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(
                    maximum_interval=timedelta(seconds=30),
                    maximum_attempts=45,
                ),
            )
            result.started += page.started
            result.already_started += page.already_started
            cursor = page.last_organization_id
            if page.done:
                return result

    @staticmethod
    def _previous_month() -> str:
        # The schedule's nominal time (also set on backfills), not the actual start time.
        moment = workflow.info().typed_search_attributes.get(SCHEDULED_START) or workflow.now()
        year, month = (moment.year, moment.month - 1) if moment.month > 1 else (moment.year - 1, 12)
        return f"{year:04d}-{month:02d}"
