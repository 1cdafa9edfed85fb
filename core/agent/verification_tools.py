"""The model's verification tools that touch only Postgres: `read_stage_log` (the end of a stage's
log in one of the task's verification runs) and `patch_stage` (one stage of the task's saved
pipeline changed, as a `repair` version). `run_pipeline` is the workflow's own (a child run)."""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.agent.tools import ToolInputError
from core.pipelines import versions
from core.pipelines.document import PipelineDocument, canonical_data
from core.pipelines.repository import stages_of
from core.pipelines.stored import document_of
from core.runs.logs import LogReader, stage_lines
from db.models.agent import AgentTask
from db.models.pipeline_versions import PipelineVersion
from db.models.pipelines import PipelineRun, StageExecution
from db.session import session_scope
from forgeline.errors import DomainError
from infra.storage import ObjectStore

LOG_TAIL_LINES = 150
LOG_TAIL_CHARS = 12_000
PATCHABLE = ("commands", "image", "environment", "cache", "working_directory")


async def _no_temporal() -> Any:
    raise RuntimeError("a finished stage's log needs no Temporal client")


async def _gone() -> bool:
    return False


async def stage_log_tail(
    session_maker: async_sessionmaker[AsyncSession], store: ObjectStore, execution: StageExecution
) -> str:
    reader = LogReader(
        session_maker=session_maker,
        store=lambda: store,
        temporal=_no_temporal,
        disconnected=_gone,
    )
    lines: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    async for _, line in stage_lines(reader, execution, -1):
        lines.append(line[:2000])
    return "\n".join(lines)[-LOG_TAIL_CHARS:]


def _marker(task_id: uuid.UUID) -> dict[str, str]:
    return {"verification_task_id": str(task_id)}


async def read_stage_log(
    session_maker: async_sessionmaker[AsyncSession],
    store: ObjectStore,
    task_id: uuid.UUID,
    args: dict[str, Any],
) -> tuple[str, str, dict[str, Any]]:
    stage = args.get("stage")
    if not isinstance(stage, str) or not stage or len(stage) > 100:
        raise ToolInputError("stage must be a stage name")
    raw = args.get("pipeline_run_id")
    async with session_maker() as session:
        query = select(PipelineRun).where(PipelineRun.metadata_.contains(_marker(task_id)))
        if raw:
            try:
                query = query.where(PipelineRun.id == uuid.UUID(str(raw)))
            except ValueError:
                raise ToolInputError("pipeline_run_id must be a UUID") from None
        run = await session.scalar(query.order_by(PipelineRun.created_at.desc()).limit(1))
        if run is None:
            raise ToolInputError("no verification run of this task (call run_pipeline first)")
        execution = await session.scalar(
            select(StageExecution)
            .where(StageExecution.run_id == run.id, StageExecution.stage_name == stage)
            .order_by(StageExecution.attempt.desc())
            .limit(1)
        )
    if execution is None:
        raise ToolInputError(f"stage {stage!r} did not run in run {run.id}")
    payload = {
        "pipeline_run_id": str(run.id),
        "stage": stage,
        "status": execution.status,
        "exit_code": execution.exit_code,
        "failure_class": execution.failure_class,
        "failure_cause": execution.failure_cause,
        "evidence": list(execution.failure_evidence or []),
        "log_tail": await stage_log_tail(session_maker, store, execution),
    }
    return json.dumps(payload, indent=1), f"{stage}: {execution.status}", {"stage": stage}


def _patched(stage: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    changed = dict(stage)
    if "commands" in args:
        commands = args["commands"]
        if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
            raise ToolInputError("commands must be a list of strings")
        changed["commands"] = commands
    if "image" in args:
        changed["image"] = args["image"]
    if "environment" in args:
        env = args["environment"]
        if not isinstance(env, dict):
            raise ToolInputError("environment must be an object")
        merged = dict(stage.get("environment") or {})
        for key, value in env.items():
            if value is None:
                merged.pop(str(key), None)
            else:
                merged[str(key)] = str(value)
        changed["environment"] = merged
    if "cache" in args:
        changed["cache"] = args["cache"]
    if "working_directory" in args:
        changed["working_directory"] = args["working_directory"]
    return changed


async def patch_stage(
    session_maker: async_sessionmaker[AsyncSession],
    store: ObjectStore,
    task_id: uuid.UUID,
    args: dict[str, Any],
) -> tuple[str, str, dict[str, Any]]:
    name = args.get("stage")
    if not isinstance(name, str) or not name:
        raise ToolInputError("stage must be a stage name")
    if not any(key in args for key in PATCHABLE):
        raise ToolInputError(f"nothing to change: give one of {', '.join(PATCHABLE)}")
    async with session_scope(session_maker) as session:
        task = await session.get(AgentTask, task_id)
        pipeline_id = await session.scalar(
            select(PipelineVersion.pipeline_id).where(PipelineVersion.agent_task_id == task_id)
        )
        if task is None or pipeline_id is None:
            raise ToolInputError("the pipeline is saved with its first run: call run_pipeline")
        pipeline = await versions.lock(session, task.organization_id, pipeline_id)
        current = document_of(pipeline, await stages_of(session, pipeline.id))
        data = current.model_dump(mode="json")
        index = next((i for i, s in enumerate(data["stages"]) if s["name"] == name), None)
        if index is None:
            raise ToolInputError(f"the pipeline has no stage {name!r}")
        data["stages"][index] = _patched(data["stages"][index], args)
        try:
            document = PipelineDocument.model_validate(data)
        except ValueError as exc:
            raise ToolInputError(f"the patched stage is not valid: {str(exc)[:2000]}") from None
        if canonical_data(document) == canonical_data(current):
            # Already applied (a retried call), or no change at all.
            return f"stage {name} unchanged (version {pipeline.version})", "unchanged", {}
        try:
            row = await versions.commit_change(
                session,
                pipeline,
                document,
                change="repair",
                author=versions.Author(user_id=task.created_by_user_id, agent_task_id=task_id),
            )
        except DomainError as exc:
            raise ToolInputError(str(exc)) from None
        return (
            f"stage {name} patched: pipeline version {row.version}",
            f"version {row.version}",
            {"version": row.version, "stage": name},
        )


VerificationTool = Callable[
    [async_sessionmaker[AsyncSession], ObjectStore, uuid.UUID, dict[str, Any]],
    Awaitable[tuple[str, str, dict[str, Any]]],
]
VERIFY_TOOLS: dict[str, VerificationTool] = {
    "read_stage_log": read_stage_log,
    "patch_stage": patch_stage,
}


def verifies_input(input_data: dict[str, Any]) -> bool:
    """Only a task that asked for verification has the verification tools."""
    return input_data.get("verify") is True
