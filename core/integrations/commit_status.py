"""Commit statuses of runs started by forge events: which state a run status reports, the one
context per pipeline, the link to the run, and the report workflows (one per run and state,
started when the run projection records the change; they never touch the run itself)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from db.models.integrations import CommitStatusTurn
from db.models.pipelines import Pipeline, PipelineRun
from db.models.projects import Repository
from forgeline.crypto import decrypt_str
from forgeline.search_attributes import forgeline_search_attributes
from forgeline.settings import INTEGRATIONS_TASK_QUEUE, Settings
from forgeline.statuses.runs import RunStatus
from workflows.commit_status import CommitStatusWorkflow
from workflows.integrations_models import (
    FINAL_COMMIT_STATES,
    CommitState,
    CommitStatusInput,
    commit_status_workflow_id,
)

log = logging.getLogger("forgeline.integrations")

CONTEXT_PREFIX = "forgeline"
# A report holds its run's turn at most this long: longer than the report activity's
# start-to-close timeout (30 s), after which a crashed report's turn is taken over.
TURN_LEASE_SECONDS = 45.0
# Waiting for the turn: the first and the longest pause between two tries.
TURN_POLL_SECONDS = (0.05, 1.0)
RUN_STATUS_STATES: dict[str, CommitState] = {
    RunStatus.QUEUED: "pending",
    RunStatus.RUNNING: "running",
    RunStatus.SUCCESS: "success",
    RunStatus.FAILED: "failure",
    RunStatus.CANCELLED: "cancelled",
}
DESCRIPTIONS: dict[CommitState, str] = {
    "pending": "Queued",
    "running": "Running",
    "success": "Passed",
    "failure": "Failed",
    "cancelled": "Cancelled",
}


@dataclass(frozen=True)
class StatusReport:
    """One commit status as every forge gets it; `token` stays inside the activity."""

    provider: str
    forge_repository: str
    sha: str
    state: CommitState
    context: str
    target_url: str
    description: str
    token: str | None


def _rank(state: CommitState) -> int:
    """Reports only move forward: pending, then running, then a final state."""
    if state in FINAL_COMMIT_STATES:
        return 2
    return 1 if state == "running" else 0


def status_context(pipeline_name: str) -> str:
    return f"{CONTEXT_PREFIX}/{pipeline_name}"[:255]


def run_url(settings: Settings, run_id: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}/v1/runs/{run_id}"


def forge_metadata(
    provider: str, delivery_id: str, forge_repository: str, event: str
) -> dict[str, Any]:
    """What a run started by a forge event keeps to report back to that forge."""
    return {
        "provider": provider,
        "delivery_id": delivery_id,
        "repository": forge_repository,
        "event": event,
    }


async def build_report(
    session: AsyncSession, settings: Settings, run_id: str, state: CommitState
) -> tuple[StatusReport | None, str | None]:
    """(report, None) or (None, why nothing is sent). A report older than the run's status (a
    pending or running one retried after the run moved on) is dropped: it would overwrite a later
    state on the forge."""
    row = (
        await session.execute(
            select(PipelineRun, Pipeline.name, Repository.access_token_encrypted)
            .join(Pipeline, Pipeline.id == PipelineRun.pipeline_id)
            .outerjoin(Repository, Repository.project_id == PipelineRun.project_id)
            .where(PipelineRun.id == uuid.UUID(run_id))
        )
    ).one_or_none()
    if row is None:
        return None, "the run no longer exists"
    run, pipeline_name, token_encrypted = row
    forge = (run.metadata_ or {}).get("forge")
    if not isinstance(forge, dict) or not run.commit_sha:
        return None, "the run was not started by a forge event"
    current = RUN_STATUS_STATES.get(run.status, "pending")
    if _rank(state) < _rank(current) or (state in FINAL_COMMIT_STATES and state != current):
        return None, f"the run is {run.status} already; {state} is stale"
    return (
        StatusReport(
            provider=str(forge["provider"]),
            forge_repository=str(forge["repository"]),
            sha=run.commit_sha,
            state=state,
            context=status_context(pipeline_name),
            target_url=run_url(settings, run_id),
            description=DESCRIPTIONS[state],
            token=decrypt_str(token_encrypted, settings) if token_encrypted else None,
        ),
        None,
    )


@contextlib.asynccontextmanager
async def reporting_turn(
    session_maker: async_sessionmaker[AsyncSession],
    run_id: str,
    *,
    on_wait: Callable[[], None] | None = None,
) -> AsyncIterator[None]:
    """The run's reports one at a time, each from its staleness check (build_report) to the
    forge's answer: a report found current reaches the forge before a later state's report is
    checked, so an earlier state never lands after a later one and the final state is the last
    the forge receives. The turn is a leased row, taken and released in short transactions: no
    database connection is held while waiting for it or while the forge answers (`on_wait` is
    called between tries: the activity's heartbeat)."""
    holder = uuid.uuid4().hex
    run = uuid.UUID(run_id)
    await _take_turn(session_maker, run, holder, on_wait)
    try:
        yield
    finally:
        async with session_maker() as session, session.begin():
            await session.execute(
                delete(CommitStatusTurn).where(
                    CommitStatusTurn.run_id == run, CommitStatusTurn.holder == holder
                )
            )


async def _take_turn(
    session_maker: async_sessionmaker[AsyncSession],
    run_id: uuid.UUID,
    holder: str,
    on_wait: Callable[[], None] | None,
) -> None:
    """Until the run's turn is this holder's: free, or left by a report that outlived its lease
    (a crashed worker)."""
    expires = func.now() + timedelta(seconds=TURN_LEASE_SECONDS)
    stmt = (
        insert(CommitStatusTurn)
        .values(run_id=run_id, holder=holder, expires_at=expires)
        .on_conflict_do_update(
            index_elements=[CommitStatusTurn.run_id],
            set_={"holder": holder, "expires_at": expires},
            where=CommitStatusTurn.expires_at < func.now(),
        )
        .returning(CommitStatusTurn.holder)
    )
    delay = TURN_POLL_SECONDS[0]
    while True:
        async with session_maker() as session, session.begin():
            taken = await session.scalar(stmt)
        if taken == holder:
            return
        if on_wait is not None:
            on_wait()
        await asyncio.sleep(delay)
        delay = min(delay * 2, TURN_POLL_SECONDS[1])


async def start_report(
    client: Client,
    run_id: str,
    state: CommitState,
    *,
    organization_id: str | None = None,
    task_queue: str = INTEGRATIONS_TASK_QUEUE,
) -> None:
    """Start the report of `state` for the run; announcing it again starts nothing."""
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            CommitStatusWorkflow.run,
            CommitStatusInput(run_id=run_id, state=state),
            id=commit_status_workflow_id(run_id, state),
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=forgeline_search_attributes(
                "commit_status", organization_id=organization_id
            ),
        )


async def announce_run_status(
    client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    run_id: str,
    *,
    task_queue: str = INTEGRATIONS_TASK_QUEUE,
) -> None:
    """Called where the run projection has recorded a status: reports the run's status as
    stored when the run came from a forge event. Never raises: a commit status must not fail
    or delay the run."""
    try:
        async with session_maker() as session:
            row = (
                await session.execute(
                    select(
                        PipelineRun.status,
                        PipelineRun.organization_id,
                        PipelineRun.metadata_["forge"].isnot(None),
                    ).where(PipelineRun.id == uuid.UUID(run_id))
                )
            ).one_or_none()
        if row is None or not row[2] or row[0] not in RUN_STATUS_STATES:
            return
        await start_report(
            client,
            run_id,
            RUN_STATUS_STATES[row[0]],
            organization_id=str(row[1]) if row[1] else None,
            task_queue=task_queue,
        )
    except Exception:
        log.warning("commit status of run %s not announced", run_id, exc_info=True)
