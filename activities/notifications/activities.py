"""Notification activities: record an event with its deliveries, try one delivery, mark one
failed. Adapters over core.notifications; each is idempotent under retries."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.notifications import delivery, recording
from core.notifications.delivery import DeliveryContext
from db.session import session_scope
from workflows.contracts.notifications import DELIVER, MARK_FAILED, RECORD_EVENT
from workflows.notifications_models import (
    DELIVERY_GONE_ERROR,
    DELIVERY_REFUSED_ERROR,
    DeliveryAttemptInput,
    DeliveryFailure,
    NotificationEvent,
    RecordedEvent,
)


class NotificationActivities:
    def __init__(self, context: DeliveryContext) -> None:
        self.context = context

    @RECORD_EVENT.implement
    async def record_event(self, event: NotificationEvent) -> RecordedEvent:
        async with session_scope(self.context.session_maker) as session:
            return await recording.record_event(session, event)

    @DELIVER.implement
    async def deliver(self, inp: DeliveryAttemptInput) -> None:
        info = activity.info()
        # One log row per try Temporal makes: a try retried after its row was written is the
        # same row.
        attempt_key = f"{info.workflow_id}:{info.activity_id}:{info.attempt}"
        try:
            await delivery.attempt_delivery(
                self.context, inp.delivery_id, attempt_key, inp.request_timeout_seconds
            )
        except delivery.DeliveryGone as exc:
            raise ApplicationError(str(exc), type=DELIVERY_GONE_ERROR, non_retryable=True) from exc
        except delivery.DeliveryRefused as exc:
            raise ApplicationError(
                str(exc), type=DELIVERY_REFUSED_ERROR, non_retryable=True
            ) from exc
        except delivery.DeliveryFailed as exc:
            raise ApplicationError(str(exc), type="DeliveryFailed") from exc

    @MARK_FAILED.implement
    async def mark_failed(self, failure: DeliveryFailure) -> None:
        async with session_scope(self.context.session_maker) as session:
            await delivery.mark_failed(session, failure.delivery_id, failure.error)
