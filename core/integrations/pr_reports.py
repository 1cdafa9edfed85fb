"""A pull request's report as pr_tracking keeps it: the CI status of each pipeline (its latest run
for the pull request), line coverage from the coverage reports those runs published as artifacts,
the security scan's status from their `security_scan` stages, the quality score
(core/integrations/quality.py) and the pull request's preview environment; the request that
brings the forge comment up to date (PullRequestReportWorkflow); a pull/merge request event's
effects (row, previews torn down on close, report)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.deployments import pr_previews
from core.integrations import coverage
from core.integrations.pull_requests import pipeline_statuses, record_pull_request, summary
from core.integrations.quality import quality_score
from core.runs.repository import run_artifacts
from db.models.deployments import Deployment
from db.models.integrations import PullRequest
from db.models.pipelines import Artifact, Pipeline, PipelineRun, PipelineStage, StageExecution
from db.models.projects import Environment, Project
from db.session import session_scope
from forgeline.search_attributes import forgeline_search_attributes
from forgeline.settings import DEPLOYMENTS_TASK_QUEUE, INTEGRATIONS_TASK_QUEUE
from forgeline.statuses.runs import StageStatus
from infra.storage import ObjectStore
from workflows.integrations_models import (
    ForgeEvent,
    PullRequestRef,
    pull_request_report_workflow_id,
)
from workflows.pull_request_report import PullRequestReportWorkflow

log = logging.getLogger("forgeline.integrations")

# Coverage reports read per pull request (the newest run of each pipeline, in name order).
MAX_REPORTS = 20
FINISHED_CHECKS = ("success", "failure")
# Stages of this type decide the pull request's security_scan_status (and its share of the score).
SECURITY_SCAN_STAGE = "security_scan"


@dataclass
class CoverageReading:
    percentage: Decimal | None = None
    notes: list[str] = field(default_factory=list)


def _read_one(store: ObjectStore, kind: str, key: str) -> coverage.Coverage:
    with store.open(key) as stream:
        return coverage.read_report(kind, stream)


async def read_coverage(
    store: ObjectStore, reports: list[tuple[str, str, str, int]]
) -> CoverageReading:
    """(name, kind, object key, size) of each report -> the combined figure and a note per
    report that gave none. Never raises for what a report contains."""
    reading = CoverageReading()
    found: list[coverage.Coverage] = []
    for name, kind, key, size in reports[:MAX_REPORTS]:
        shown = name[-200:]
        if size > coverage.MAX_REPORT_BYTES:
            reading.notes.append(
                f"{shown}: larger than {coverage.MAX_REPORT_BYTES // (1024 * 1024)} MiB, ignored"
            )
            continue
        try:
            found.append(await asyncio.to_thread(_read_one, store, kind, key))
        except coverage.UnreadableReport as exc:
            reading.notes.append(f"{shown}: {exc}, ignored")
        except Exception as exc:  # an object store failure must not hide the other reports
            log.warning("coverage report %s unreadable", key, exc_info=True)
            reading.notes.append(f"{shown}: could not be read ({type(exc).__name__}), ignored")
    if len(reports) > MAX_REPORTS:
        reading.notes.append(f"only the first {MAX_REPORTS} coverage reports were read")
    total = coverage.combine(found)
    if total is not None and total.total > 0:
        reading.percentage = total.percentage
    elif found:
        reading.notes.append("the coverage reports measured no lines")
    return reading


async def _report_artifacts(
    session: AsyncSession, run_ids: list[uuid.UUID]
) -> list[tuple[str, str, str, int]]:
    reports: list[tuple[str, str, str, int]] = []
    for run_id in run_ids:
        rows = await session.scalars(run_artifacts(run_id).order_by(Artifact.name, Artifact.id))
        for artifact in rows:
            kind = coverage.report_kind(artifact.name)
            if kind is not None:
                reports.append((artifact.name, kind, artifact.object_key, artifact.size_bytes))
    return reports


async def security_scan_status(session: AsyncSession, run_ids: list[uuid.UUID]) -> str | None:
    """'failure' when a security_scan stage of the runs failed (its last attempt), 'success' when
    every one passed, None when the runs have none (or none finished)."""
    if not run_ids:
        return None
    rows = await session.execute(
        select(StageExecution.status)
        .join(PipelineStage, PipelineStage.id == StageExecution.stage_id)
        .where(
            StageExecution.run_id.in_(run_ids),
            PipelineStage.stage_type == SECURITY_SCAN_STAGE,
        )
        .order_by(StageExecution.run_id, StageExecution.stage_name, StageExecution.attempt.desc())
        .ext(distinct_on(StageExecution.run_id, StageExecution.stage_name))
    )
    statuses = [status for (status,) in rows]
    if any(s in (StageStatus.FAILED, StageStatus.TIMED_OUT) for s in statuses):
        return "failure"
    if statuses and all(s == StageStatus.SUCCESS for s in statuses):
        return "success"
    return None


async def summarize(
    session_maker: async_sessionmaker[AsyncSession], store: ObjectStore, ref: PullRequestRef
) -> None:
    """Recompute the row's checks, coverage, quality score and preview. Reports are read
    outside any transaction; the row is written under its lock."""
    project_id = uuid.UUID(ref.project_id)
    async with session_maker() as session:
        latest = await pipeline_statuses(session, project_id, ref.forge_repository, ref.pr_number)
        finished = [uuid.UUID(r) for r, s in latest.values() if s in FINISHED_CHECKS]
        reports = await _report_artifacts(session, finished)
        security = await security_scan_status(session, finished)
        found = await session.execute(
            select(Pipeline.id, Pipeline.name).where(
                Pipeline.id.in_([uuid.UUID(p) for p in latest])
            )
        )
        names = {pipeline_id: name for pipeline_id, name in found}
    reading = await read_coverage(store, reports)
    async with session_scope(session_maker) as session:
        row = await session.scalar(
            select(PullRequest)
            .where(PullRequest.project_id == project_id, PullRequest.pr_number == ref.pr_number)
            .with_for_update()
        )
        if row is None:
            return
        row.pipeline_checks = {
            pipeline: {
                "name": names.get(uuid.UUID(pipeline), "pipeline"),
                "run_id": run_id,
                "status": status,
            }
            for pipeline, (run_id, status) in latest.items()
        }
        if latest:
            row.ci_status = summary([status for _, status in latest.values()])
        if finished:
            row.test_coverage_percentage = reading.percentage
            row.coverage_note = "; ".join(reading.notes)[:2000] or None
        if security is not None:
            row.security_scan_status = security
        row.quality_score = quality_score(
            [status for _, status in latest.values()],
            row.test_coverage_percentage,
            row.security_scan_status,
        )
        row.preview_environment_id = await session.scalar(
            select(Environment.id)
            .where(
                Environment.project_id == project_id,
                Environment.env_type == "preview",
                Environment.preview_pr_number == ref.pr_number,
            )
            .order_by(Environment.created_at.desc())
            .limit(1)
        )


async def request_report(
    client: Client, ref: PullRequestRef, *, task_queue: str = INTEGRATIONS_TASK_QUEUE
) -> None:
    """Bring the pull request's report and comment up to date (one writer per pull request;
    requests during a pass fold into one more pass). Never raises."""
    try:
        await client.start_workflow(
            PullRequestReportWorkflow.run,
            ref,
            id=pull_request_report_workflow_id(ref.project_id, ref.pr_number),
            task_queue=task_queue,
            start_signal="refresh",
            search_attributes=forgeline_search_attributes(
                "pull_request_report",
                organization_id=ref.organization_id,
                project_id=ref.project_id,
            ),
        )
    except Exception:
        log.warning("report of pull request #%s not requested", ref.pr_number, exc_info=True)


def ref_from_run_metadata(
    project_id: uuid.UUID, organization_id: uuid.UUID | None, metadata: dict[str, object] | None
) -> PullRequestRef | None:
    """The pull request a run belongs to, from the forge metadata its start recorded."""
    forge = (metadata or {}).get("forge")
    if not isinstance(forge, dict) or forge.get("event") != "pull_request":
        return None
    number, provider, repository = (
        forge.get("pr_number"),
        forge.get("provider"),
        forge.get("repository"),
    )
    if not isinstance(number, int) or provider not in ("github", "gitlab"):
        return None
    if not isinstance(repository, str):
        return None
    with contextlib.suppress(ValueError):
        return PullRequestRef(
            project_id=str(project_id),
            pr_number=number,
            provider=provider,
            forge_repository=repository,
            organization_id=str(organization_id) if organization_id else None,
        )
    return None


async def keep_previews_alive(
    session_maker: async_sessionmaker[AsyncSession],
    temporal: Client,
    ref: PullRequestRef,
    *,
    task_queue: str = DEPLOYMENTS_TASK_QUEUE,
) -> None:
    """An open pull request's live previews: their lifetimes started or extended (TTL from now).
    A closed pull request's previews that still serve are torn down (again): a deploy that went
    live after the teardown its closing started."""
    project_id = uuid.UUID(ref.project_id)
    async with session_maker() as session:
        state = await session.scalar(
            select(PullRequest.status).where(
                PullRequest.project_id == project_id, PullRequest.pr_number == ref.pr_number
            )
        )
        if state is None:
            return
        organization_id = str(
            await session.scalar(select(Project.organization_id).where(Project.id == project_id))
            or ""
        )
        closed = state in pr_previews.CLOSED_STATES
        if closed:
            live = await pr_previews.serving_previews_of(session, project_id, ref.pr_number)
        else:
            previews = await pr_previews.previews_of(session, project_id, ref.pr_number)
            live = [env for env in previews if env.url]
    for env in live:
        if closed:
            await pr_previews.tear_down(
                temporal, env, organization_id, f"pull request {state}", task_queue=task_queue
            )
        else:
            await pr_previews.keep_alive(temporal, env, organization_id, task_queue=task_queue)


async def after_pull_request_event(
    session_maker: async_sessionmaker[AsyncSession],
    temporal: Client,
    event: ForgeEvent,
    *,
    deployments_task_queue: str = DEPLOYMENTS_TASK_QUEUE,
    report_task_queue: str = INTEGRATIONS_TASK_QUEUE,
) -> None:
    """A pull/merge request event: the row recorded; on close or merge its previews torn down;
    then its report brought up to date."""
    if event.kind != "pull_request" or event.pr_number is None:
        return
    async with session_scope(session_maker) as session:
        await record_pull_request(session, event)
    if event.pr_action == "closed":
        async with session_maker() as session:
            previews = await pr_previews.previews_of(
                session, uuid.UUID(event.project_id), event.pr_number
            )
        reason = "pull request merged" if event.merged else "pull request closed"
        for env in previews:
            await pr_previews.tear_down(
                temporal,
                env,
                event.organization_id or "",
                reason,
                task_queue=deployments_task_queue,
            )
    await request_report(
        temporal,
        PullRequestRef(
            project_id=event.project_id,
            pr_number=event.pr_number,
            provider=event.provider,
            forge_repository=event.forge_repository,
            organization_id=event.organization_id,
            from_fork=event.from_fork,
        ),
        task_queue=report_task_queue,
    )


async def request_for_run(
    session_maker: async_sessionmaker[AsyncSession],
    temporal: Client,
    run_id: uuid.UUID,
    *,
    task_queue: str = INTEGRATIONS_TASK_QUEUE,
) -> None:
    """The run's pull request (when it has one) gets its report brought up to date."""
    async with session_maker() as session:
        found = (
            await session.execute(
                select(
                    PipelineRun.project_id, PipelineRun.organization_id, PipelineRun.metadata_
                ).where(PipelineRun.id == run_id)
            )
        ).one_or_none()
    if found is None:
        return
    ref = ref_from_run_metadata(found[0], found[1], found[2])
    if ref is not None:
        await request_report(temporal, ref, task_queue=task_queue)


async def request_for_preview(
    session_maker: async_sessionmaker[AsyncSession],
    temporal: Client,
    environment_id: str,
    *,
    task_queue: str = INTEGRATIONS_TASK_QUEUE,
) -> None:
    """A pull request's preview changed outside a run (torn down when its time to live ran
    out): the report of the pull request whose run deployed it last brought up to date, so the
    comment no longer shows a dead URL as live. Never raises."""
    try:
        async with session_maker() as session:
            run_id = await session.scalar(
                select(Deployment.pipeline_run_id)
                .join(Environment, Environment.id == Deployment.environment_id)
                .where(
                    Deployment.environment_id == uuid.UUID(environment_id),
                    Deployment.pipeline_run_id.is_not(None),
                    Environment.env_type == "preview",
                )
                .order_by(Deployment.created_at.desc())
                .limit(1)
            )
        if run_id is not None:
            await request_for_run(session_maker, temporal, run_id, task_queue=task_queue)
    except Exception:
        log.warning("report of preview %s not requested", environment_id, exc_info=True)
