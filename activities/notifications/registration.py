"""Notifications task queue: the notification and redelivery workflows and their activities."""

from __future__ import annotations

from activities.deps import Registration, WorkerDeps
from activities.notifications.activities import NotificationActivities
from core.notifications.delivery import DeliveryContext
from infra.mail import Mailer, mailer_for
from workflows.notification import NotificationRedeliveryWorkflow, NotificationWorkflow

WORKFLOWS: list[type] = [NotificationWorkflow, NotificationRedeliveryWorkflow]


def registration(deps: WorkerDeps, *, mailer: Mailer | None = None) -> Registration:
    context = DeliveryContext(
        settings=deps.settings,
        session_maker=deps.session_maker,
        mailer=mailer or mailer_for(deps.settings),
    )
    activities = NotificationActivities(context)
    return Registration(
        task_queue=deps.settings.notifications_task_queue,
        workflows=WORKFLOWS,
        activities=[activities.record_event, activities.deliver, activities.mark_failed],
    )
