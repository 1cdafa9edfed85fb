"""Run-level activities: load the plan, ask for a build slot, mark started, check out, finish."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Coroutine
from datetime import timedelta
from decimal import ROUND_UP, Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.pipelines import projections
from activities.pipelines.plan import load_plan
from activities.pipelines.stage_execution import run_workspace
from db.models.projects import Repository
from db.session import driver_connection, session_scope
from forgeline.crypto import decrypt_str
from forgeline.settings import Settings
from workflows.build_slots import BuildSlotsWorkflow
from workflows.pipeline_models import (
    ACQUIRE_SIGNAL,
    ACQUIRE_SLOT,
    FIND_GONE_HOLDERS,
    RELEASE_SLOT,
    RUN_NOT_FOUND_ERROR,
    BuildSlotsInput,
    CheckoutResult,
    FinishRunInput,
    PipelineRunInput,
    RunPlan,
    RunStarted,
    SlotHolders,
    SlotRelease,
    SlotRequest,
    build_slots_workflow_id,
)

# Bounds each call on the build-slot semaphore: a worker shutting down (nobody left to run the
# semaphore's workflow task) must not hang a local activity until the default RPC timeout.
SLOT_RPC_TIMEOUT = timedelta(seconds=10)
# The acquire update answers in ~10 ms on a running semaphore; one that takes longer is queued
# behind others (a burst of runs): queueing by signal is then the faster way in.
SLOT_UPDATE_RPC_TIMEOUT = timedelta(seconds=2)
WORKFLOW_STATUS = {"success": "completed", "failed": "failed", "cancelled": "cancelled"}


def build_minutes(total_ms: int) -> Decimal:
    """Billed to the hundredth of a minute, rounded up (a 1 ms build is not free)."""
    return (Decimal(total_ms) / Decimal(60_000)).quantize(Decimal("0.01"), rounding=ROUND_UP)


def _run_not_found(run_id: str) -> ApplicationError:
    return ApplicationError(
        f"pipeline run {run_id} not found", type=RUN_NOT_FOUND_ERROR, non_retryable=True
    )


class RunActivities:
    def __init__(
        self,
        settings: Settings,
        session_maker: async_sessionmaker[AsyncSession],
        temporal: Client,
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.temporal = temporal

    @activity.defn(name="prepare_run")
    async def prepare_run(self, inp: PipelineRunInput) -> RunPlan:
        """Load the plan and ask the organization's semaphore for a build slot
        (update-with-start). Granted with nothing to clone, the run is marked started too."""
        async with session_scope(self.session_maker) as session:
            plan = await load_plan(session, inp.run_id)
        if plan is None:
            raise _run_not_found(inp.run_id)
        key = inp.organization_id or f"project-{inp.project_id}"
        info = activity.info()
        # Always set for an activity of a workflow (only standalone activities lack them).
        assert info.workflow_id is not None and info.workflow_run_id is not None
        granted = await self.acquire_build_slot(
            SlotRequest(
                organization_key=key,
                run_workflow_id=info.workflow_id,
                limit=plan.concurrent_builds,
            )
        )
        plan = plan.model_copy(update={"slot_granted": bool(granted)})
        if granted and not plan.has_repository:
            # Nothing to clone: the run starts now, without a start_run step of its own.
            await self._mark_started(
                inp.run_id, info.workflow_id, info.workflow_run_id, info.task_queue
            )
            run_workspace(self.settings, inp.run_id).mkdir(parents=True, exist_ok=True)
            plan = plan.model_copy(update={"started": True, "status": "running"})
        return plan

    @activity.defn(name=ACQUIRE_SLOT)
    async def acquire_build_slot(self, request: SlotRequest) -> bool:
        """Queue at the organization's semaphore (started if need be); True = slot held now,
        False = the grant comes later as a signal to the run.

        Update-with-start first: the semaphore answers at once whether the slot is free (FIFO
        order is decided inside BuildSlotsWorkflow). Temporal admits only a few updates in flight
        per workflow (10 by default), so when many runs of one organization start together the
        update is refused or times out: the run then queues with signal-with-start (no such
        limit) and waits for its grant. Both are idempotent: a holder is granted again, a waiter
        keeps its place.
        """
        handle_id = build_slots_workflow_id(request.organization_key)
        start = BuildSlotsInput(organization_key=request.organization_key, limit=request.limit)
        queue = activity.info().task_queue
        try:
            granted = await self.temporal.execute_update_with_start_workflow(
                BuildSlotsWorkflow.acquire_now,
                request,
                start_workflow_operation=WithStartWorkflowOperation(
                    BuildSlotsWorkflow.run,
                    start,
                    id=handle_id,
                    task_queue=queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                ),
                rpc_timeout=SLOT_UPDATE_RPC_TIMEOUT,
            )
            return bool(granted)
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
            activity.logger.info("build slots %s busy (%s); queueing by signal", handle_id, exc)
        await self.temporal.start_workflow(
            BuildSlotsWorkflow.run,
            start,
            id=handle_id,
            task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal=ACQUIRE_SIGNAL,
            start_signal_args=[request],
            rpc_timeout=SLOT_RPC_TIMEOUT,
        )
        return False

    @activity.defn(name=RELEASE_SLOT)
    async def release_build_slot(self, request: SlotRequest) -> bool:
        """Give the slot back (or leave the queue); False: the semaphore had already ended."""
        return await self._release_slot(request.organization_key, request.run_workflow_id)

    @activity.defn(name=FIND_GONE_HOLDERS)
    async def find_gone_slot_holders(self, inp: SlotHolders) -> SlotHolders:
        """The holders whose run is closed or unknown (terminated, timed out, never released)."""
        gone: list[str] = []
        for wf_id in inp.workflow_ids:
            try:
                desc = await self.temporal.get_workflow_handle(wf_id).describe()
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    gone.append(wf_id)
                    continue
                raise
            if desc.status != WorkflowExecutionStatus.RUNNING:
                gone.append(wf_id)
        return SlotHolders(workflow_ids=gone)

    @activity.defn(name="start_run")
    async def start_run(self, inp: RunStarted) -> CheckoutResult:
        """Mark the run running (+ its workflow_executions row), then check out its commit."""
        started = await self._mark_started(
            inp.run_id, inp.workflow_id, inp.workflow_run_id, inp.task_queue
        )
        changed = started.metadata.get("changed_paths")
        async with self.session_maker() as session:
            repo = await session.scalar(
                select(Repository).where(Repository.project_id == started.project_id)
            )
        workspace = run_workspace(self.settings, inp.run_id)
        if repo is None:
            workspace.mkdir(parents=True, exist_ok=True)
            return CheckoutResult(commit_sha=inp.commit_sha, changed_paths=changed)
        commit = await self._checkout(repo, workspace, inp)
        async with session_scope(self.session_maker) as session:
            await projections.set_run_status(session, inp.run_id, commit_sha=commit)
        return CheckoutResult(commit_sha=commit, changed_paths=changed)

    async def _mark_started(
        self, run_id: str, workflow_id: str, workflow_run_id: str, queue: str
    ) -> projections.StartedRun:
        async with driver_connection(self.session_maker) as conn:
            started = await projections.mark_run_started(
                conn,
                run_id=run_id,
                workflow_id=workflow_id,
                workflow_run_id=workflow_run_id,
                task_queue=queue,
            )
        if started is None:
            raise _run_not_found(run_id)
        return started

    async def _release_slot(self, key: str, run_workflow_id: str) -> bool:
        try:
            await self.temporal.get_workflow_handle(build_slots_workflow_id(key)).signal(
                BuildSlotsWorkflow.release,
                SlotRelease(run_workflow_id=run_workflow_id),
                rpc_timeout=SLOT_RPC_TIMEOUT,
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            # The semaphore has ended: nothing is held any more.
            activity.logger.info("build slots %s gone; nothing to release", key)
            return False
        return True

    async def _checkout(self, repo: Repository, workspace: Path, inp: RunStarted) -> str:
        """Clone the project's repository at the run's commit (or branch) into the workspace."""
        from activities.git import RepositoryUnavailable, clone_repository
        from forgeline.url_safety import UnsafeRepositoryUrl

        token = (
            decrypt_str(repo.access_token_encrypted, self.settings)
            if repo.access_token_encrypted
            else None
        )
        try:
            result = await clone_repository(
                repo.url,
                workspace,
                branch=None if inp.commit_sha else inp.branch or repo.default_branch,
                commit=inp.commit_sha,
                token=token,
                allow_local=self.settings.allow_local_repositories,
                on_progress=lambda: activity.heartbeat(),
            )
        except (RepositoryUnavailable, UnsafeRepositoryUrl) as exc:
            raise ApplicationError(str(exc), type="GitError", non_retryable=True) from exc
        return result.commit_sha

    @activity.defn(name="finish_run")
    async def finish_run(self, inp: FinishRunInput) -> None:
        """Slot released, final status, unfinished stages closed, one build_minutes record,
        operator row closed. Idempotent: a retry releases and records nothing twice."""
        from activities.billing.metering import record_usage_on

        async def close_run() -> None:
            async with driver_connection(self.session_maker) as conn:
                run = await projections.finish_run(
                    conn,
                    run_id=inp.run_id,
                    status=inp.status,
                    error=inp.error,
                    unfinished_stage_status="cancelled" if inp.status == "cancelled" else "failed",
                    workflow_status=WORKFLOW_STATUS[inp.status],
                    workflow_id=inp.workflow_id,
                    workflow_run_id=inp.workflow_run_id,
                )
                if run is None:
                    raise _run_not_found(inp.run_id)
                if run.organization_id is not None:
                    # A retry finds the run finished already and records the minutes once.
                    await record_usage_on(
                        conn,
                        organization_id=run.organization_id,
                        project_id=run.project_id,
                        usage_type="build_minutes",
                        quantity=build_minutes(run.build_ms),
                        idempotency_key=f"pipeline-run-{inp.run_id}:build_minutes",
                        source_refs={
                            "pipeline_run_id": inp.run_id,
                            "pipeline_id": str(run.pipeline_id),
                        },
                    )

        # The slot is released alongside the bookkeeping, not after it: a finished run must
        # never hold a slot, even if the bookkeeping fails (it is retried; releasing twice is
        # harmless).
        steps: list[Coroutine[Any, Any, object]] = [close_run()]
        if inp.slot_key is not None:
            steps.append(self._release_slot(inp.slot_key, inp.workflow_id))
        for outcome in await asyncio.gather(*steps, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        await asyncio.to_thread(
            shutil.rmtree, run_workspace(self.settings, inp.run_id), ignore_errors=True
        )
