"""Emitting an event: start its notification workflow, keyed by the event's identity, and move
on. Called where a run, deployment or invoice changed state, after that change is committed;
it never raises and never waits on a delivery, so it cannot fail or hold up what emitted it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from forgeline.search_attributes import forgeline_search_attributes
from forgeline.settings import Settings
from workflows.notification import NotificationWorkflow
from workflows.notifications_models import (
    DeliveryPolicy,
    NotificationEvent,
    notification_workflow_id,
)

log = logging.getLogger("forgeline.notifications")

# How long an emitter waits for Temporal to take the start before it gives up on the event.
START_TIMEOUT = timedelta(seconds=5)


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    return DeliveryPolicy(
        max_attempts=settings.notification_max_attempts,
        initial_interval_seconds=settings.notification_retry_initial_seconds,
        max_interval_seconds=settings.notification_retry_max_seconds,
        request_timeout_seconds=settings.notification_request_timeout_seconds,
    )


def event(
    settings: Settings,
    *,
    key: str,
    event_type: str,
    organization_id: object,
    title: str,
    body: str,
    data: dict[str, str | int | float | bool | None],
    actor_user_id: object | None = None,
    record_in_app: bool = True,
) -> NotificationEvent:
    return NotificationEvent(
        key=key,
        event_type=event_type,
        organization_id=str(organization_id),
        title=title,
        body=body,
        data=data,
        occurred_at=datetime.now(UTC),
        actor_user_id=str(actor_user_id) if actor_user_id else None,
        record_in_app=record_in_app,
        policy=delivery_policy(settings),
    )


async def emit(client: Client, settings: Settings, notification: NotificationEvent) -> bool:
    """True when this call started the event's workflow; False when it was started before or
    could not be started (logged)."""
    try:
        await client.start_workflow(
            NotificationWorkflow.run,
            notification,
            id=notification_workflow_id(notification.key),
            task_queue=settings.notifications_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=forgeline_search_attributes(
                "notification", organization_id=notification.organization_id
            ),
            rpc_timeout=START_TIMEOUT,
        )
    except WorkflowAlreadyStartedError:
        return False
    except Exception:
        log.warning("notification %s not emitted", notification.key, exc_info=True)
        return False
    return True
