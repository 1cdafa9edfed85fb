"""Notification workflows: one per event (record it, then deliver to every channel target with
bounded retries and backoff) and one per redelivery asked for by a user. Separate from the run,
deployment or billing workflow that emitted the event, so a receiver that is down never fails or
delays it."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.contracts.notifications import DELIVER, MARK_FAILED, RECORD_EVENT
    from workflows.notifications_models import (
        DeliveryAttemptInput,
        DeliveryFailure,
        DeliveryPolicy,
        NotificationEvent,
        NotificationOutcome,
        RedeliveryInput,
    )

BOOKKEEPING_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=20,
)


def delivery_retry(policy: DeliveryPolicy) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=policy.initial_interval_seconds),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=policy.max_interval_seconds),
        maximum_attempts=policy.max_attempts,
    )


async def deliver_with_retries(delivery_id: str, policy: DeliveryPolicy) -> bool:
    """True once delivered; False when every try failed (the delivery is marked failed)."""
    try:
        await DELIVER.execute(
            DeliveryAttemptInput(
                delivery_id=delivery_id, request_timeout_seconds=policy.request_timeout_seconds
            ),
            start_to_close_timeout=timedelta(seconds=policy.request_timeout_seconds + 20),
            retry_policy=delivery_retry(policy),
        )
        return True
    except ActivityError as exc:
        await MARK_FAILED.execute(
            DeliveryFailure(delivery_id=delivery_id, error=str(exc.cause or exc)[:1000]),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=BOOKKEEPING_RETRY,
        )
        return False


def outcome(results: list[bool]) -> NotificationOutcome:
    delivered = sum(1 for ok in results if ok)
    return NotificationOutcome(delivered=delivered, failed=len(results) - delivered)


@workflow.defn(name="NotificationWorkflow")
class NotificationWorkflow:
    @workflow.run
    async def run(self, event: NotificationEvent) -> NotificationOutcome:
        recorded = await RECORD_EVENT.execute(
            event, start_to_close_timeout=timedelta(seconds=30), retry_policy=BOOKKEEPING_RETRY
        )
        results = await asyncio.gather(
            *(deliver_with_retries(ref.delivery_id, event.policy) for ref in recorded.deliveries)
        )
        return outcome(list(results))


@workflow.defn(name="NotificationRedeliveryWorkflow")
class NotificationRedeliveryWorkflow:
    @workflow.run
    async def run(self, inp: RedeliveryInput) -> NotificationOutcome:
        return outcome([await deliver_with_retries(inp.delivery_id, inp.policy)])
