"""Every activity of the notifications domain: its registered name, input, output and the
errors that are never retried. The names are part of recorded histories and never change.

Pure: importable inside the workflow sandbox.
"""

from __future__ import annotations

from workflows.contract import ActivityContract
from workflows.notifications_models import (
    DELIVERY_GONE_ERROR,
    DELIVERY_REFUSED_ERROR,
    DeliveryAttemptInput,
    DeliveryFailure,
    NotificationEvent,
    RecordedEvent,
)

# Record the event once, its in-app notifications, and one delivery per channel target.
RECORD_EVENT = ActivityContract("record_notification_event", NotificationEvent, RecordedEvent)
# One try of one delivery (webhook, e-mail or Slack); the attempt is logged either way.
DELIVER = ActivityContract(
    "deliver_notification",
    DeliveryAttemptInput,
    type(None),
    non_retryable=(DELIVERY_GONE_ERROR, DELIVERY_REFUSED_ERROR),
)
# Every try failed: the delivery is marked failed (it can be redelivered on demand).
MARK_FAILED = ActivityContract("mark_notification_delivery_failed", DeliveryFailure, type(None))
