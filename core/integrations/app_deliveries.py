"""Deliveries of the GitHub App's webhook (one secret for every installation, set by the
operator): installation changes update the connection that holds the installation; a check run
or suite's "Re-run" reruns the runs it reports from their failed stage; pushes and pull
requests of repositories connected through the installation go the way of every delivery."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from core.audit.system import record_system_action
from core.integrations import deliveries
from core.integrations import repository as queries
from core.integrations.app_installations import record_installation_event
from core.integrations.check_runs import METADATA_KEY
from core.integrations.errors import (
    DeliveryTooLarge,
    MalformedDelivery,
    SignatureInvalid,
    UnknownRepository,
    UnsupportedEvent,
)
from core.integrations.signatures import github_signature_valid
from core.runs.service import rerun, start_run_workflow
from db.models.integrations import WebhookPayload
from db.models.pipelines import PipelineRun
from db.models.projects import GitProviderConnection, Project, Repository
from forgeline.errors import Conflict
from forgeline.settings import PIPELINES_TASK_QUEUE, Settings
from forgeline.statuses.runs import RunStatus

INSTALLATION_EVENTS = ("installation", "installation_repositories")
RERUN_EVENTS = ("check_run", "check_suite")
FORWARDED_EVENTS = ("push", "pull_request")
RERUNNABLE = (RunStatus.FAILED, RunStatus.CANCELLED)
MAX_RERUNS = 20
MAX_SUITE_RUNS = 200
# The rerun's metadata names the delivery that asked for it: a redelivery starts the reruns a
# crash left unstarted between their commit and their workflow's start.
REQUESTED_BY = "forge_rerequest"


def _authenticated(settings: Settings, delivery: deliveries.Delivery) -> dict[str, Any]:
    if len(delivery.body) > settings.webhook_max_body_bytes:
        raise DeliveryTooLarge(f"payloads over {settings.webhook_max_body_bytes} bytes are refused")
    secret = settings.github_app_webhook_secret
    if secret is None:
        raise SignatureInvalid("the GitHub App's webhook secret is not configured")
    header = delivery.header("x-hub-signature-256")
    if not github_signature_valid(secret.get_secret_value(), delivery.body, header):
        raise SignatureInvalid("X-Hub-Signature-256 does not match the App's webhook secret")
    return deliveries.parse_payload(delivery.body)


def _installation_id(payload: dict[str, Any]) -> int:
    installation = payload.get("installation")
    value = installation.get("id") if isinstance(installation, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise MalformedDelivery("the delivery names no installation")
    return value


async def _candidate(
    session: AsyncSession, settings: Settings, installation_id: int, payload: dict[str, Any]
) -> queries.RepositoryCandidate:
    repository = payload.get("repository")
    full_name = repository.get("full_name") if isinstance(repository, dict) else None
    if not isinstance(full_name, str):
        raise MalformedDelivery("the delivery names no repository")
    row = (
        await session.execute(
            select(Repository.id, Repository.project_id, Project.organization_id)
            .join(Project, Project.id == Repository.project_id)
            .join(GitProviderConnection, GitProviderConnection.id == Repository.connection_id)
            .where(
                GitProviderConnection.installation_id == installation_id,
                GitProviderConnection.revoked_at.is_(None),
                Repository.url.in_(
                    queries.url_variants((f"{settings.github_web_url.rstrip('/')}/{full_name}",))
                ),
            )
            .limit(1)
        )
    ).one_or_none()
    if row is None:
        raise UnknownRepository("no repository is connected through this installation")
    return queries.RepositoryCandidate(row[0], row[1], row[2], "github", None)


def _repository_name(payload: dict[str, Any]) -> str:
    repository = payload.get("repository")
    full_name = repository.get("full_name") if isinstance(repository, dict) else None
    if not isinstance(full_name, str) or len(full_name) > 300:
        raise MalformedDelivery("the delivery names no repository")
    return full_name


async def _covered_repository(
    session: AsyncSession, installation_id: int, payload: dict[str, Any]
) -> None:
    """The delivery's repository is one this live installation covers for an organization;
    anything else is refused before a row is read or written."""
    full_name = _repository_name(payload)
    covered = await session.scalar(
        select(GitProviderConnection.id).where(
            GitProviderConnection.installation_id == installation_id,
            GitProviderConnection.revoked_at.is_(None),
            GitProviderConnection.installation_repositories.contains([full_name]),
        )
    )
    if covered is None:
        raise UnknownRepository("no repository is connected through this installation")


async def _rerequested_runs(
    session: AsyncSession, installation_id: int, event: str, payload: dict[str, Any]
) -> list[PipelineRun]:
    """The finished runs the check run (by its external ID) or suite (by its commit) reports,
    of repositories connected through this installation only, reported on the repository the
    delivery names (a fork sharing the commit is another repository)."""
    query = (
        select(PipelineRun)
        .join(Repository, Repository.project_id == PipelineRun.project_id)
        .join(GitProviderConnection, GitProviderConnection.id == Repository.connection_id)
        .where(
            GitProviderConnection.installation_id == installation_id,
            PipelineRun.metadata_[METADATA_KEY].isnot(None),
            PipelineRun.metadata_["forge"]["repository"].astext == _repository_name(payload),
        )
    )
    holder = payload.get(event)
    if not isinstance(holder, dict):
        raise MalformedDelivery(f"the delivery has no {event}")
    if event == "check_run":
        try:
            run_id = uuid.UUID(str(holder.get("external_id")))
        except ValueError:
            return []
        query = query.where(PipelineRun.id == run_id)
    else:
        sha = holder.get("head_sha")
        if not isinstance(sha, str) or len(sha) > 64:
            raise MalformedDelivery("the check suite has no head SHA")
        query = query.where(PipelineRun.commit_sha == sha)
    newest_first = query.order_by(PipelineRun.created_at.desc()).limit(MAX_SUITE_RUNS)
    # A suite reruns the latest run of each pipeline on the commit, when that one failed: a
    # failed run already rerun successfully is not rerun again.
    latest: dict[uuid.UUID, PipelineRun] = {}
    for run in (await session.scalars(newest_first)).all():
        latest.setdefault(run.pipeline_id, run)
    return [r for r in latest.values() if r.status in RERUNNABLE][:MAX_RERUNS]


async def receive_app(
    session: AsyncSession,
    temporal: Callable[[], Awaitable[Client]],
    settings: Settings,
    delivery: deliveries.Delivery,
    rejected: deliveries.RejectedDeliveries,
    *,
    run_task_queue: str = PIPELINES_TASK_QUEUE,
) -> deliveries.DeliveryReceipt:
    """Verify with the App's secret, then act on the event (once per delivery ID)."""
    event = delivery.event_type
    with rejected.counted(delivery.provider):
        payload = _authenticated(settings, delivery)
        if event == "ping":
            return deliveries.DeliveryReceipt(status="pong")
        installation_id = _installation_id(payload)
        if event in FORWARDED_EVENTS:
            candidate = await _candidate(session, settings, installation_id, payload)
        elif event in RERUN_EVENTS:
            if payload.get("action") == "rerequested":
                await _covered_repository(session, installation_id, payload)
        elif event not in INSTALLATION_EVENTS:
            raise UnsupportedEvent(f"the App does not handle {event[:100]!r} events")
        delivery_id = deliveries.delivery_id_of(delivery)
    if event in FORWARDED_EVENTS:
        return await deliveries.accept(
            session,
            temporal,
            delivery,
            candidate,
            payload,
            rejected,
            task_queue=settings.integrations_task_queue,
        )
    if event in RERUN_EVENTS:
        return await _rerequest(
            session, temporal, settings, delivery, installation_id, payload, run_task_queue
        )
    _, created = await queries.insert_delivery(session, _row(delivery, delivery_id, payload))
    if created:
        await record_installation_event(session, event, payload)
    await session.commit()
    return deliveries.DeliveryReceipt(
        status="accepted" if created else "duplicate", delivery_id=delivery_id
    )


def _row(
    delivery: deliveries.Delivery,
    delivery_id: str,
    payload: dict[str, Any],
    source: PipelineRun | None = None,
) -> dict[str, Any]:
    return {
        "provider": "github",
        "delivery_id": delivery_id,
        "event_type": delivery.event_type[:100],
        "organization_id": source.organization_id if source else None,
        "project_id": source.project_id if source else None,
        "payload": payload,
        "headers": deliveries.stored_headers(delivery),
        "signature_valid": True,
        "status": "processed",
    }


async def _rerequest(
    session: AsyncSession,
    temporal: Callable[[], Awaitable[Client]],
    settings: Settings,
    delivery: deliveries.Delivery,
    installation_id: int,
    payload: dict[str, Any],
    run_task_queue: str,
) -> deliveries.DeliveryReceipt:
    """A check run or suite's "Re-run": its failed runs rerun from their failed stage, once per
    delivery. Another action, or no finished run of this installation to rerun: ignored, and
    nothing is written."""
    event, delivery_id = delivery.event_type, delivery.delivery_id
    assert delivery_id is not None
    if payload.get("action") != "rerequested":
        return deliveries.DeliveryReceipt(
            status="ignored", delivery_id=delivery_id, reason=f"{event} events need nothing"
        )
    sources = await _rerequested_runs(session, installation_id, event, payload)
    known = (
        await session.execute(
            select(WebhookPayload.organization_id).where(
                WebhookPayload.provider == "github", WebhookPayload.delivery_id == delivery_id
            )
        )
    ).one_or_none()
    if not sources and known is None:
        return deliveries.DeliveryReceipt(
            status="ignored",
            delivery_id=delivery_id,
            reason="no finished run of this installation matches",
        )
    created = False
    if known is None:
        _, created = await queries.insert_delivery(
            session, _row(delivery, delivery_id, payload, sources[0])
        )
    started: list[PipelineRun] = []
    if created:
        for source in sources:
            try:
                assert source.organization_id is not None
                run = await rerun(
                    session,
                    settings,
                    organization_id=source.organization_id,
                    run_id=source.id,
                    from_failed=True,
                )
            except Conflict:
                continue  # not finished yet: nothing to rerun
            run.metadata_ = {**run.metadata_, REQUESTED_BY: delivery_id}
            # Audited as API reruns are, with the system as actor: the forge's button was
            # pressed by someone the forge knows and Forgeline does not.
            await record_system_action(
                session,
                organization_id=source.organization_id,
                action="pipeline_run.rerun",
                resource_type="pipeline_run",
                resource_id=run.id,
                new={"rerun_of": str(source.id), "from": "failed"},
                metadata={
                    "requested_by": "github_app",
                    "event": event,
                    "delivery_id": delivery_id,
                    "installation_id": installation_id,
                },
            )
            started.append(run)
        await session.commit()
    else:
        # Read before the rollback expires the source rows.
        organization_id = known[0] if known is not None else sources[0].organization_id
        await session.rollback()
        started = await _unstarted_reruns(session, organization_id, delivery_id)
    if started:
        client = await temporal()
        for run in started:
            await start_run_workflow(client, run, task_queue=run_task_queue)
    return deliveries.DeliveryReceipt(
        status="accepted" if created else "duplicate", delivery_id=delivery_id
    )


async def _unstarted_reruns(
    session: AsyncSession, organization_id: uuid.UUID | None, delivery_id: str
) -> list[PipelineRun]:
    """The reruns a first delivery created that are still queued (their start may have been
    lost to a crash after the commit): starting them again is harmless."""
    if organization_id is None:
        return []
    rows = await session.scalars(
        select(PipelineRun)
        .where(
            PipelineRun.organization_id == organization_id,
            PipelineRun.status == RunStatus.QUEUED,
            PipelineRun.metadata_[REQUESTED_BY].astext == delivery_id,
        )
        .limit(MAX_RERUNS)
    )
    return list(rows)
