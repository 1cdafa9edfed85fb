"""Verification of a generated pipeline by running it: the verification run (trigger
`verification`, on the task's commit; a rerun from the failed stage after a repair) and the
examination of a finished run: green, or the failed stage's class, evidence and log tail, and
a rule-based repair committed as the pipeline's next version when the failure is its fault."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.agent.errors import AgentFailure, task_not_found
from core.agent.executions import save_task_pipeline
from core.agent.outcomes import with_checkout
from core.agent.progress import Tick
from core.agent.project_settings import build_settings_of
from core.agent.repairs import Repair, apply_repair, repair_stage
from core.agent.repo_files import RepoFiles
from core.agent.submodules import declared_submodules
from core.agent.tools import AgentToolbox
from core.agent.verification_tools import stage_log_tail
from core.agent.verification_turns import turn_is_held
from core.agent.workspaces import Workspaces
from core.pipelines import versions
from core.pipelines.document import PipelineDocument
from core.pipelines.repository import stages_of
from core.pipelines.stored import document_of
from core.runs import service as runs
from core.runs.failure_classes import FailureClassification
from core.runs.schemas import RunCreate
from db.models.agent import AgentTask
from db.models.pipelines import PipelineRun, PipelineStage, StageExecution
from db.session import session_scope
from forgeline.errors import DomainError
from forgeline.settings import Settings
from forgeline.statuses.runs import FailureClass, RunStatus
from infra.storage import ObjectStore
from workflows.agent_models import AgentTaskInputData
from workflows.verification_models import (
    ExamineRunInput,
    PrepareVerificationInput,
    RunExamination,
    VerificationRun,
)

# Failed stages a verification reads (their log tails) in one examination.
MAX_EXAMINED_STAGES = 8


@dataclass
class VerificationRuns:
    settings: Settings
    session_maker: async_sessionmaker[AsyncSession]
    store: ObjectStore
    workspaces: Workspaces

    async def prepare(
        self, inp: PrepareVerificationInput, tick: Tick, temporal: Client | None = None
    ) -> VerificationRun:
        """The task's pipeline saved and its verification run committed (the same run again on
        a retried attempt). `temporal` lets the turn go past an earlier verification whose
        workflow was closed outside Forgeline."""
        root = await self.workspaces.ensure(inp.task_id, inp.checkout, tick)
        if inp.attempt == 1 and await turn_is_held(temporal, self.session_maker, inp.task_id):
            # One verification of a project at a time, in arrival order: two would repair
            # and regenerate the same pipeline under each other's runs.
            raise AgentFailure(
                "VerificationWaiting",
                "an earlier verification of this project is still running",
                retryable=True,
            )
        async with session_scope(self.session_maker) as session:
            task = await session.get(AgentTask, inp.task_id)
            if task is None or task.organization_id is None:
                raise task_not_found(inp.task_id)
            data = AgentTaskInputData.model_validate(task.input_data or {})
            project = await build_settings_of(session, inp.task_id)
            toolbox = AgentToolbox(root, self.store, str(inp.task_id), data, project)
            pipeline_id = await save_task_pipeline(session, task, inp.checkout, toolbox)
            marker = {"verification_task_id": str(task.id), "verification_attempt": inp.attempt}
            run = await session.scalar(
                select(PipelineRun).where(
                    PipelineRun.pipeline_id == pipeline_id,
                    PipelineRun.metadata_.contains(marker),
                )
            )
            if run is None:
                run = await self._new_run(session, task, pipeline_id, inp, marker)
            return VerificationRun(
                run_id=run.id,
                pipeline_id=pipeline_id,
                project_id=run.project_id,
                organization_id=run.organization_id,
                workflow_id=run.workflow_id or "",
                attempt=inp.attempt,
            )

    async def _new_run(
        self,
        session: AsyncSession,
        task: AgentTask,
        pipeline_id: uuid.UUID,
        inp: PrepareVerificationInput,
        marker: dict[str, object],
    ) -> PipelineRun:
        assert task.organization_id is not None
        source = await session.get(PipelineRun, inp.rerun_of) if inp.rerun_of else None
        try:
            run = await runs.create_run(
                session,
                self.settings,
                organization_id=task.organization_id,
                pipeline_id=pipeline_id,
                body=RunCreate(branch=inp.checkout.branch, commit_sha=inp.checkout.commit_sha),
                user_id=task.created_by_user_id,
                rerun_of=source,
                reuse_results=source is not None,
            )
        except DomainError as exc:
            # The pipeline cannot be run (paused, over the plan's limits): say so, once.
            raise AgentFailure("VerificationRefused", str(exc)) from exc
        run.trigger = "verification"
        run.metadata_ = {**(run.metadata_ or {}), **marker}
        await session.flush()
        return run

    async def examine(self, inp: ExamineRunInput, tick: Tick) -> RunExamination:
        """Green, or the failed stage with its evidence. Every failed stage is examined: the
        config failures with a known repair (parallel stages often fail the same way) are
        committed together as the pipeline's next version (author: the task)."""
        async with session_scope(self.session_maker) as session:
            run = await session.get(PipelineRun, inp.run_id)
            if run is None:
                raise task_not_found(inp.task_id)
            exam = RunExamination(run_id=run.id, status=run.status)
            if run.status == RunStatus.SUCCESS:
                exam.green = True
                return exam
            failures = await _failed_executions(session, run.id)
            if not failures:
                exam.diagnosis = run.error or f"the verification run ended {run.status}"
                return exam
            failed = failures[0]
            exam.failed_stage = failed.stage_name
            exam.failure_class = failed.failure_class
            exam.diagnosis = failed.failure_cause or failed.error
            found: list[tuple[StageExecution, list[str], str]] = []
            for execution in failures[:MAX_EXAMINED_STAGES]:
                # What the runner did otherwise than asked (a Python the host lacks) first.
                evidence = [*(execution.warnings or []), *(execution.failure_evidence or [])]
                tail = await stage_log_tail(self.session_maker, self.store, execution)
                found.append((execution, evidence, tail))
            exam.evidence = found[0][1]
        root = await self.workspaces.ensure(inp.task_id, inp.checkout, tick)
        async with session_scope(self.session_maker) as session:
            pipeline = await versions.lock(session, None, run.pipeline_id)
            stages = await stages_of(session, pipeline.id)
            document = document_of(pipeline, stages)
            data = document.model_dump(mode="json")
            repairs: dict[int, tuple[str, Repair]] = {}
            for execution, evidence, tail in found:
                index = stage_index(data["stages"], execution.stage_name)
                if index is None or index in repairs:
                    continue
                repair = repair_stage(data["stages"][index], evidence, tail, root)
                if repair is not None:
                    repairs[index] = (execution.stage_name, repair)
            if not repairs:
                _blame_checkout(exam, found[0][2], root)
                return exam
            exam.repairable = True
            exam.failure_class = FailureClass.CONFIG
            exam.diagnosis = next(iter(repairs.values()))[1].diagnosis
            if not inp.may_repair:
                return exam
            for index, (_, repair) in repairs.items():
                apply_repair(data["stages"], index, repair)
            await versions.commit_change(
                session,
                pipeline,
                PipelineDocument.model_validate(data),
                change="repair",
                author=versions.Author(
                    user_id=await _task_author(session, inp.task_id), agent_task_id=inp.task_id
                ),
            )
            exam.repaired = True
            exam.repair = "; ".join(f"{name}: {r.diagnosis}" for name, r in repairs.values())
            return exam


def _blame_checkout(exam: RunExamination, tail: str, root: Path) -> None:
    """A code failure that is a file of a declared submodule the checkout lacks is config."""
    if exam.failure_class != FailureClass.CODE:
        return
    found = with_checkout(
        FailureClassification(FailureClass.CODE, exam.diagnosis or "", list(exam.evidence)),
        {"log_tail": tail},
        declared_submodules(RepoFiles(root).text(".gitmodules")),
    )
    if found.failure_class == FailureClass.CONFIG:
        exam.failure_class = found.failure_class
        exam.diagnosis = found.cause
        exam.evidence = found.evidence


def stage_index(stages: list[dict[str, Any]], failed: str | None) -> int | None:
    """The document stage a failed execution ran: itself, or the matrix stage of a failed leg
    (`test (22)` is a leg of `test`; the longest such name wins)."""
    if failed is None:
        return None
    for i, stage in enumerate(stages):
        if stage["name"] == failed:
            return i
    legs = [
        (len(stage["name"]), i)
        for i, stage in enumerate(stages)
        if (stage.get("runtime") or {}).get("matrix") and failed.startswith(f"{stage['name']} (")
    ]
    return max(legs)[1] if legs else None


async def _task_author(session: AsyncSession, task_id: uuid.UUID) -> uuid.UUID | None:
    task = await session.get(AgentTask, task_id)
    return task.created_by_user_id if task else None


async def _failed_execution(session: AsyncSession, run_id: uuid.UUID) -> StageExecution | None:
    """The last attempt of the first stage that failed the run (see _failed_executions)."""
    failures = await _failed_executions(session, run_id)
    return failures[0] if failures else None


async def _failed_executions(session: AsyncSession, run_id: uuid.UUID) -> list[StageExecution]:
    """The last attempt of each stage that failed the run, first started first: its last
    attempt failed (an attempt a retry made good is not one) and it was not allowed to fail."""
    rows = await session.execute(
        select(StageExecution, PipelineStage.allow_failure)
        .outerjoin(PipelineStage, PipelineStage.id == StageExecution.stage_id)
        .where(StageExecution.run_id == run_id)
        .order_by(StageExecution.attempt)
    )
    last: dict[str, tuple[StageExecution, bool]] = {}
    for execution, allowed in rows:
        last[execution.stage_name] = (execution, bool(allowed))
    failed = [
        execution
        for execution, allowed in last.values()
        if execution.status in ("failed", "timed_out") and not allowed
    ]
    return sorted(failed, key=_started)


def _started(execution: StageExecution) -> tuple[bool, datetime]:
    started = execution.started_at
    return (started is None, started or datetime.max.replace(tzinfo=UTC))
