"""Integrations task queue: forge deliveries and schedule firings to runs, and commit statuses
back to the forge."""

from __future__ import annotations

from activities.deps import Registration, WorkerDeps
from activities.integrations.activities import IntegrationActivities
from activities.integrations.pull_requests import PullRequestActivities
from workflows.commit_status import CommitStatusWorkflow
from workflows.pull_request_report import PullRequestReportWorkflow
from workflows.scheduled_run import ScheduledRunWorkflow
from workflows.webhook_delivery import WebhookDeliveryWorkflow

WORKFLOWS: list[type] = [
    WebhookDeliveryWorkflow,
    CommitStatusWorkflow,
    ScheduledRunWorkflow,
    PullRequestReportWorkflow,
]


def registration(deps: WorkerDeps) -> Registration:
    integrations = IntegrationActivities(deps.settings, deps.session_maker, deps.temporal)
    pull_requests = PullRequestActivities(deps.settings, deps.session_maker, deps.temporal)
    return Registration(
        task_queue=deps.settings.integrations_task_queue,
        workflows=WORKFLOWS,
        activities=[
            integrations.match_triggers,
            integrations.compute_changed_paths,
            integrations.start_runs,
            integrations.start_scheduled_run,
            integrations.record_delivery_outcome,
            integrations.record_pull_request,
            integrations.report_commit_status,
            pull_requests.summarize_pull_request,
            pull_requests.publish_pull_request_comment,
        ],
    )
