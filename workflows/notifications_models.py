"""Payloads of the notification workflows: an event as its emitter saw it, the deliveries
recorded for it, and one delivery try. Pure: importable in the workflow sandbox.

No secret ever travels here: endpoint secrets, Slack URLs and e-mail addresses are read by the
delivery activity from the database by the delivery's id."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

# The delivery's row is gone (its endpoint was deleted): nothing to retry.
DELIVERY_GONE_ERROR = "DeliveryGone"
# The target refuses the delivery for good (unsafe URL, no address, channel unconfigured).
DELIVERY_REFUSED_ERROR = "DeliveryRefused"


def notification_workflow_id(event_key: str) -> str:
    """One workflow per event: emitting the same event again starts nothing."""
    return f"notification-{event_key}"


def redelivery_workflow_id(delivery_id: str, redelivery: int) -> str:
    return f"notification-redelivery-{delivery_id}-{redelivery}"


class DeliveryPolicy(BaseModel):
    """Bounded retries with exponential backoff for each delivery of an event."""

    max_attempts: int = Field(default=6, ge=1, le=50)
    initial_interval_seconds: float = Field(default=10.0, gt=0)
    max_interval_seconds: float = Field(default=900.0, gt=0)
    request_timeout_seconds: float = Field(default=10.0, gt=0)


class NotificationEvent(BaseModel):
    """Something that happened, as emitted where it happened."""

    key: str
    event_type: str
    organization_id: str
    title: str
    body: str
    # Ids, names, statuses and links only; read by receivers as the event's `data`.
    data: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    occurred_at: datetime
    # The member who caused it (triggered the run or deployment), when there is one.
    actor_user_id: str | None = None
    # Billing writes its owners' in-app rows itself, in the transaction that bills.
    record_in_app: bool = True
    policy: DeliveryPolicy = Field(default_factory=DeliveryPolicy)


class DeliveryRef(BaseModel):
    delivery_id: str
    channel: str


class RecordedEvent(BaseModel):
    event_id: str
    deliveries: list[DeliveryRef] = Field(default_factory=list)


class DeliveryAttemptInput(BaseModel):
    delivery_id: str
    request_timeout_seconds: float = 10.0


class DeliveryFailure(BaseModel):
    delivery_id: str
    error: str


class RedeliveryInput(BaseModel):
    delivery_id: str
    policy: DeliveryPolicy = Field(default_factory=DeliveryPolicy)


class NotificationOutcome(BaseModel):
    delivered: int = 0
    failed: int = 0
