"""Run-level activities: load the plan, ask for a build slot, mark started, check out, finish."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.runs.attempts import run_not_found, run_workspace
from activities.runs.run_variables import resolve_run_variables
from core.billing.metering import record_usage_on
from core.integrations.clone_access import (
    InstallationTokenUnavailable,
    InstallationUnusable,
    clone_access,
    clone_plan,
)
from core.integrations.commit_status import announce_run_status
from core.notifications.sources import announce_run
from core.pipelines.pipeline_file import (
    PIPELINE_FILE_ERROR,
    PipelineFileInvalid,
    RepositoryPipeline,
    load_repository_pipeline,
    record_invalid_file,
)
from core.runs import build_slots, finishing, run_records
from core.runs.plan import load_plan, slot_limit_for_key
from core.runs.run_limits import remove_empty_spool_dir, run_spool_dir
from core.runs.slot_grants import SlotGrants
from core.runs.stage_records import record_never_opened
from db.models.projects import Repository
from db.session import driver_connection, session_scope
from forgeline.settings import Settings
from forgeline.statuses.runs import RunStatus
from workflows.contracts.runs import (
    ACQUIRE_SLOT,
    FINISH_RUN,
    GIT_ERROR,
    PREPARE_RUN,
    RECORD_LOST_ATTEMPTS,
    RELEASE_SLOT,
    START_RUN,
)
from workflows.runs_models import (
    CheckoutResult,
    FinishRunInput,
    LostAttemptsInput,
    PipelineRunInput,
    RunPlan,
    RunStarted,
    SlotClaim,
    SlotRequest,
    build_slot_key,
)

# GitHub did not mint an App installation token for the clone now: retried per the policy.
INSTALLATION_TOKEN_UNAVAILABLE = "InstallationTokenUnavailable"


def stage_environment_ids(plan: RunPlan) -> list[str]:
    """The deploy environments a run's stages name (their variables are resolved at start)."""
    return sorted({s.deploy_environment_id for s in plan.stages if s.deploy_environment_id})


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
        self.slots = SlotGrants(temporal, session_maker)

    @PREPARE_RUN.implement
    async def prepare_run(self, inp: PipelineRunInput) -> RunPlan:
        """Load the plan and claim a build slot (or queue for one). Granted with nothing to clone,
        the run is marked started too. One pooled connection for the three."""
        info = activity.info()
        # Always set for an activity of a workflow (only standalone activities lack them).
        assert info.workflow_id is not None and info.workflow_run_id is not None
        key = build_slot_key(inp.organization_id, inp.project_id)
        started: run_records.StartedRun | None = None
        async with driver_connection(self.session_maker) as conn:
            plan = await load_plan(conn, inp.run_id)
            if plan is None:
                raise run_not_found(inp.run_id)
            if plan.has_repository:
                claim, pending = await build_slots.acquire(
                    conn, key, info.workflow_id, plan.concurrent_builds, uuid.UUID(inp.run_id)
                )
            else:
                # Nothing to clone: a granted run starts now, without a start_run step of its
                # own; the claim and the start are one statement.
                claim, pending, started = await run_records.claim_slot_and_start(
                    conn,
                    run_id=inp.run_id,
                    workflow_id=info.workflow_id,
                    workflow_run_id=info.workflow_run_id,
                    task_queue=info.task_queue,
                    slot_key=key,
                    limit=plan.concurrent_builds,
                )
                if claim.holding and started is None:
                    raise run_not_found(inp.run_id)
        if started is not None:
            await self._announce_start(inp.run_id, started)
        await self.slots.settle(key, claim, pending)
        update: dict[str, object] = {
            "slot_granted": claim.holding,
            "slot_claim": claim.seq,
            "build_task_queue": self.settings.build_task_queue,
        }
        if started is not None:
            run_workspace(self.settings, inp.run_id).mkdir(parents=True, exist_ok=True)
            variables = resolve_run_variables(
                self.settings, started.variables, stage_environment_ids(plan)
            )
            update |= {"started": True, "status": RunStatus.RUNNING, "variables": variables}
        return plan.model_copy(update=update)

    @ACQUIRE_SLOT.implement
    async def acquire_build_slot(self, request: SlotRequest) -> SlotClaim:
        """Claim one of the organization's build slots: held now, or queued in trigger
        order (a `slot_granted` signal naming the claim follows when a slot frees).

        Idempotent: a holder holds, a waiter keeps its place.
        """
        key = request.organization_key
        async with driver_connection(self.session_maker) as conn:
            # The plan's limit now, not the one the run was prepared under.
            limit = await slot_limit_for_key(conn, key, request.limit)
            claim, pending = await build_slots.acquire(conn, key, request.run_workflow_id, limit)
        await self.slots.settle(key, claim, pending)
        return SlotClaim(granted=claim.holding, seq=claim.seq)

    @RELEASE_SLOT.implement
    async def release_build_slot(self, request: SlotRequest) -> bool:
        """Give the slot back (or leave the queue); the next waiting run is granted it."""
        await self.slots.release(request.organization_key, request.run_workflow_id)
        return True

    @START_RUN.implement
    async def start_run(self, inp: RunStarted) -> CheckoutResult:
        """Mark the run running (+ its workflow_executions row), then check out its commit."""
        async with driver_connection(self.session_maker) as conn:
            started = await self._mark_started(
                conn, inp.run_id, inp.workflow_id, inp.workflow_run_id, inp.task_queue
            )
        changed = started.metadata.get("changed_paths")
        # Decrypted here, on the control plane: the stages' build hosts get their share in
        # encrypted payloads.
        variables = resolve_run_variables(self.settings, started.variables, inp.environment_ids)
        async with self.session_maker() as session:
            repo = await session.scalar(
                select(Repository).where(Repository.project_id == started.project_id)
            )
        workspace = run_workspace(self.settings, inp.run_id)
        if repo is None:
            workspace.mkdir(parents=True, exist_ok=True)
            return CheckoutResult(
                commit_sha=inp.commit_sha,
                changed_paths=changed,
                variables=variables,
                limits=started.limits,
            )
        commit = await self._checkout(repo, workspace, inp)
        async with session_scope(self.session_maker) as session:
            await run_records.set_run_status(session, inp.run_id, commit_sha=commit)
        from_file = await self._pipeline_file(inp.run_id, workspace, commit)
        if from_file is None:
            return CheckoutResult(
                commit_sha=commit, changed_paths=changed, variables=variables, limits=started.limits
            )
        environments = sorted({s.deploy_environment_id or "" for s in from_file.stages} - {""})
        return CheckoutResult(
            commit_sha=commit,
            changed_paths=changed,
            variables=resolve_run_variables(self.settings, started.variables, environments),
            limits=started.limits,
            stages=from_file.stages,
            reusable=from_file.reusable,
        )

    async def _pipeline_file(
        self, run_id: str, workspace: Path, commit: str
    ) -> RepositoryPipeline | None:
        """The commit's `.forgeline.yml`, validated; an invalid one fails the run (its errors in
        a `pipeline-file` stage's log) without a retry: the commit will not change."""
        async with driver_connection(self.session_maker) as conn:
            try:
                return await load_repository_pipeline(conn, run_id, workspace, commit)
            except PipelineFileInvalid as exc:
                await record_invalid_file(conn, run_id, exc)
                raise ApplicationError(
                    exc.message, type=PIPELINE_FILE_ERROR, non_retryable=True
                ) from None

    async def _mark_started(
        self,
        conn: asyncpg.Connection,
        run_id: str,
        workflow_id: str,
        workflow_run_id: str,
        queue: str,
    ) -> run_records.StartedRun:
        """Running, with its operator row and the variables snapshot it took."""
        started = await run_records.mark_run_started(
            conn,
            run_id=run_id,
            workflow_id=workflow_id,
            workflow_run_id=workflow_run_id,
            task_queue=queue,
        )
        if started is None:
            raise run_not_found(run_id)
        await self._announce_start(run_id, started)
        return started

    async def _announce_start(self, run_id: str, started: run_records.StartedRun) -> None:
        # A run started by a forge event reports `running` on its commit (never raises); the
        # metadata just returned says whether it was one, so other runs read nothing more.
        if "forge" in started.metadata:
            await announce_run_status(
                self.temporal,
                self.session_maker,
                run_id,
                task_queue=self.settings.integrations_task_queue,
            )

    async def _checkout(self, repo: Repository, workspace: Path, inp: RunStarted) -> str:
        """Clone the project's repository at the run's commit (or branch) into the workspace,
        with its stored token or a token of its GitHub App installation minted for this clone."""
        from forgeline.url_safety import UnsafeRepositoryUrl
        from infra.git import RepositoryUnavailable, clone_repository

        async with self.session_maker() as session:
            plan = await clone_plan(session, repo.id)
        if plan is None:
            raise ApplicationError("the repository was disconnected", type=GIT_ERROR)
        try:
            access = await clone_access(self.settings, plan)
        except InstallationUnusable as exc:
            raise ApplicationError(exc.detail, type=GIT_ERROR, non_retryable=True) from None
        except InstallationTokenUnavailable as exc:
            delay = timedelta(seconds=exc.retry_after) if exc.retry_after is not None else None
            raise ApplicationError(
                exc.detail, type=INSTALLATION_TOKEN_UNAVAILABLE, next_retry_delay=delay
            ) from None
        try:
            result = await clone_repository(
                access.url,
                workspace,
                branch=None if inp.commit_sha else inp.branch or repo.default_branch,
                commit=inp.commit_sha,
                token=access.token,
                allow_local=self.settings.allow_local_repositories,
                operator_host=access.operator_host,
                on_progress=lambda: activity.heartbeat(),
            )
        except (RepositoryUnavailable, UnsafeRepositoryUrl) as exc:
            raise ApplicationError(str(exc), type=GIT_ERROR, non_retryable=True) from exc
        return result.commit_sha

    @RECORD_LOST_ATTEMPTS.implement
    async def record_lost_attempts(self, inp: LostAttemptsInput) -> None:
        async with driver_connection(self.session_maker) as conn:
            await record_never_opened(
                conn,
                run_id=inp.run_id,
                stage_name=inp.stage.name,
                stage_id=inp.stage.stage_id,
                attempts=inp.attempts,
            )

    @FINISH_RUN.implement
    async def finish_run(self, inp: FinishRunInput) -> None:
        """Slot released, final status, unfinished stages closed, one build_minutes record,
        operator row closed. Idempotent: a retry releases and records nothing twice."""
        # The slot is released alongside the bookkeeping, not after it: a finished run must
        # never hold a slot, even if the bookkeeping fails (it is retried; releasing twice is
        # harmless).
        # Every stage has ended (or confirmed its cancel): the workspace goes side by side with
        # the bookkeeping, which never reads it (a retry finds it gone).
        steps: list[Coroutine[Any, Any, object]] = [
            self._close_run(inp),
            finishing.remove_workspace(run_workspace(self.settings, inp.run_id)),
        ]
        if inp.slot_key is not None:
            steps.append(self.slots.release(inp.slot_key, inp.workflow_id))
        outcomes = await asyncio.gather(*steps, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        run = outcomes[0]
        assert isinstance(run, run_records.FinishedRun)
        # Once the final status is recorded, side by side (each its own round trips): it goes to
        # the commit of a forge event's run and to the notifications (run.failed, or run.fixed
        # after a red run on its pipeline and branch; neither raises).
        # Closing the run returned what decides that neither applies: then nothing is read.
        after: list[Coroutine[Any, Any, None]] = []
        if run.forge:
            after.append(
                announce_run_status(
                    self.temporal,
                    self.session_maker,
                    inp.run_id,
                    task_queue=self.settings.integrations_task_queue,
                )
            )
        if finishing.may_notify(run):
            after.append(announce_run(self.temporal, self.session_maker, self.settings, inp.run_id))
        await asyncio.gather(*after)
        remove_empty_spool_dir(run_spool_dir(self.settings.data_dir, inp.run_id))

    async def _close_run(self, inp: FinishRunInput) -> run_records.FinishedRun:
        async with driver_connection(self.session_maker) as conn:
            run = await finishing.close_run(conn, inp)
            if run is None:
                raise run_not_found(inp.run_id)
            if run.organization_id is not None:
                # A retry finds the run finished already and records the minutes once.
                await record_usage_on(conn, **finishing.build_minutes_usage(inp.run_id, run))
        return run
