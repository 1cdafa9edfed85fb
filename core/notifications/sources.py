"""The events of runs, deployments and billing, built from the rows where their transitions are
recorded, and announced (never raising) by the activities that record them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.notifications import emit
from db.models.billing import Invoice
from db.models.deployments import Deployment
from db.models.pipelines import Pipeline, PipelineRun
from db.models.projects import Environment, Project
from forgeline.settings import Settings
from forgeline.statuses.deployments import DeploymentStatus
from forgeline.statuses.notifications import NotificationEventType as Ev
from forgeline.statuses.runs import RunStatus
from workflows.notifications_models import NotificationEvent

log = logging.getLogger("forgeline.notifications")

DEPLOYMENT_EVENTS = {
    DeploymentStatus.AWAITING_APPROVAL: (Ev.DEPLOYMENT_AWAITING_APPROVAL, "awaits approval"),
    DeploymentStatus.ACTIVE: (Ev.DEPLOYMENT_LIVE, "is live"),
    DeploymentStatus.ROLLED_BACK: (Ev.DEPLOYMENT_ROLLED_BACK, "was rolled back"),
    DeploymentStatus.FAILED: (Ev.DEPLOYMENT_FAILED, "failed"),
}


def _base_url(settings: Settings) -> str:
    return settings.public_base_url.rstrip("/")


def run_event_kind(
    organization_id: uuid.UUID | None, status: str | None, previous_status: str | None
) -> Ev | None:
    """The rule for runs: run.failed for a failed run of an organization; run.fixed for a
    success whose previous finished run on the same pipeline and branch failed."""
    if organization_id is None:
        return None
    if status == RunStatus.FAILED:
        return Ev.RUN_FAILED
    if status == RunStatus.SUCCESS and previous_status == RunStatus.FAILED:
        return Ev.RUN_FIXED
    return None


async def run_event(
    session: AsyncSession, settings: Settings, run_id: str
) -> NotificationEvent | None:
    """run.failed for a failed run; run.fixed for a successful run whose previous finished run
    on the same pipeline and branch failed; None otherwise."""
    row = (
        await session.execute(
            select(PipelineRun, Pipeline.name, Project.name)
            .join(Pipeline, Pipeline.id == PipelineRun.pipeline_id)
            .join(Project, Project.id == PipelineRun.project_id)
            .where(PipelineRun.id == uuid.UUID(run_id))
        )
    ).one_or_none()
    if row is None:
        return None
    run, pipeline_name, project_name = row
    if run.organization_id is None or run.status not in (RunStatus.FAILED, RunStatus.SUCCESS):
        return None
    where = f"{pipeline_name} #{run.run_number} of {project_name}" + (
        f" on {run.branch}" if run.branch else ""
    )
    data: dict[str, str | int | float | bool | None] = {
        "run_id": run_id,
        "run_number": run.run_number,
        "pipeline_id": str(run.pipeline_id),
        "pipeline": pipeline_name,
        "project_id": str(run.project_id),
        "project": project_name,
        "branch": run.branch,
        "commit_sha": run.commit_sha,
        "status": run.status,
        "url": f"{_base_url(settings)}/v1/runs/{run_id}",
    }
    if run.status == RunStatus.FAILED:
        kind, title, body = Ev.RUN_FAILED, f"Run failed: {where}", run.error or "A stage failed."
    else:
        previous = await session.scalar(
            select(PipelineRun.status)
            .where(
                PipelineRun.pipeline_id == run.pipeline_id,
                PipelineRun.branch.is_not_distinct_from(run.branch),
                PipelineRun.id != run.id,
                PipelineRun.run_number < run.run_number,
                PipelineRun.status.in_((RunStatus.FAILED, RunStatus.SUCCESS)),
            )
            .order_by(PipelineRun.run_number.desc())
            .limit(1)
        )
        if run_event_kind(run.organization_id, run.status, previous) is None:
            return None
        kind, title, body = Ev.RUN_FIXED, f"Run fixed: {where}", "Passing again after a failure."
    return emit.event(
        settings,
        key=f"{kind}:{run_id}",
        event_type=kind,
        organization_id=run.organization_id,
        title=title,
        body=body,
        data=data,
        actor_user_id=run.triggered_by_user_id,
    )


async def deployment_event(
    session: AsyncSession, settings: Settings, deployment_id: str, status: str
) -> NotificationEvent | None:
    if status not in DEPLOYMENT_EVENTS:
        return None
    row = (
        await session.execute(
            select(Deployment, Environment.name, Project.name)
            .join(Environment, Environment.id == Deployment.environment_id)
            .join(Project, Project.id == Deployment.project_id)
            .where(Deployment.id == uuid.UUID(deployment_id))
        )
    ).one_or_none()
    if row is None or row[0].organization_id is None:
        return None
    deployment, environment, project = row
    kind, verb = DEPLOYMENT_EVENTS[DeploymentStatus(status)]
    body = deployment.error if status != DeploymentStatus.ACTIVE and deployment.error else ""
    return emit.event(
        settings,
        key=f"{kind}:{deployment_id}",
        event_type=kind,
        organization_id=deployment.organization_id,
        title=f"Deployment {deployment.version} of {project} to {environment} {verb}",
        body=body or f"Deployment {deployment.version} {verb}.",
        data={
            "deployment_id": deployment_id,
            "project_id": str(deployment.project_id),
            "project": project,
            "environment_id": str(deployment.environment_id),
            "environment": environment,
            "version": deployment.version,
            "status": status,
            "deployment_url": deployment.url,
            "url": f"{_base_url(settings)}/v1/deployments/{deployment_id}",
        },
        actor_user_id=deployment.triggered_by_user_id,
    )


async def invoice_event(
    session: AsyncSession, settings: Settings, invoice_id: str, kind: Ev, *, attempt: int = 0
) -> NotificationEvent | None:
    """invoice.issued or payment.failed (one per attempt); billing wrote the owners' in-app
    rows already, so only the other channels deliver."""
    invoice = await session.get(Invoice, uuid.UUID(invoice_id))
    if invoice is None:
        return None
    if kind == Ev.INVOICE_ISSUED:
        title = f"Invoice {invoice.invoice_number} issued"
        body = f"Total {invoice.total} {invoice.currency}."
        key = f"{kind}:{invoice_id}"
    else:
        title = f"Payment for invoice {invoice.invoice_number} failed"
        body = f"Attempt {attempt} to collect {invoice.total} {invoice.currency} failed."
        key = f"{kind}:{invoice_id}:{attempt}"
    return emit.event(
        settings,
        key=key,
        event_type=kind,
        organization_id=invoice.organization_id,
        title=title,
        body=body,
        data={
            "invoice_id": invoice_id,
            "invoice_number": invoice.invoice_number,
            "total": str(invoice.total),
            "currency": invoice.currency,
            "status": invoice.status,
            "attempt": attempt or None,
            "url": f"{_base_url(settings)}/v1/billing/invoices/{invoice_id}",
        },
        record_in_app=False,
    )


async def _announce(
    client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    what: str,
    build: Callable[[AsyncSession], Awaitable[NotificationEvent | None]],
) -> None:
    """Build the event and emit it. Never raises: a notification must not fail or delay the
    run, deployment or invoice it tells about."""
    try:
        async with session_maker() as session:
            found = await build(session)
        if found is not None:
            await emit.emit(client, settings, found)
    except Exception:
        log.warning("notification for %s not announced", what, exc_info=True)


async def announce_run(
    client: Client, session_maker: async_sessionmaker[AsyncSession], settings: Settings,
    run_id: str,
) -> None:  # fmt: skip
    await _announce(
        client, session_maker, settings, f"run {run_id}", lambda s: run_event(s, settings, run_id)
    )


async def announce_deployment(
    client: Client, session_maker: async_sessionmaker[AsyncSession], settings: Settings,
    deployment_id: str, status: str,
) -> None:  # fmt: skip
    await _announce(
        client,
        session_maker,
        settings,
        f"deployment {deployment_id}",
        lambda s: deployment_event(s, settings, deployment_id, status),
    )


async def announce_invoice(
    client: Client, session_maker: async_sessionmaker[AsyncSession], settings: Settings,
    invoice_id: str, kind: Ev, *, attempt: int = 0,
) -> None:  # fmt: skip
    await _announce(
        client,
        session_maker,
        settings,
        f"invoice {invoice_id}",
        lambda s: invoice_event(s, settings, invoice_id, kind, attempt=attempt),
    )


def limit_event(
    settings: Settings,
    organization_id: uuid.UUID,
    detail: str,
    facts: dict[str, object],
    *,
    actor_user_id: uuid.UUID | None,
    month: str,
) -> NotificationEvent:
    """billing.limit_reached: once per organization, limit and month, however often refused."""
    limit = str(facts.get("limit"))
    data: dict[str, str | int | float | bool | None] = {
        key: value if isinstance(value, str | int | float | bool) else None
        for key, value in facts.items()
        if key in ("limit", "plan", "maximum", "current")
    }
    return emit.event(
        settings,
        key=f"{Ev.SPENDING_LIMIT_REACHED}:{organization_id}:{limit}:{month}",
        event_type=Ev.SPENDING_LIMIT_REACHED,
        organization_id=organization_id,
        title=f"Plan limit reached: {limit.replace('_', ' ')}",
        body=detail,
        data={**data, "url": f"{_base_url(settings)}/v1/billing/plan"},
        actor_user_id=actor_user_id,
    )
