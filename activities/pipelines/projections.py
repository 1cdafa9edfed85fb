"""Postgres projections of pipeline runs: idempotent upserts keyed by deterministic IDs.

Core statements (not the ORM) because they sit on the hot path of every log chunk and stage.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.operations import WorkflowExecution
from db.models.pipelines import Artifact, PipelineRun, StageExecution, StageLogChunk

_NAMESPACE = uuid.UUID("6f1c8a55-8a57-4d0b-9a3e-3c1f0c6b2d11")
UNFINISHED_STAGE = ("pending", "queued", "running")


def stage_execution_id(run_id: str, stage_name: str, attempt: int) -> uuid.UUID:
    """The same attempt of the same stage always maps to the same row."""
    return uuid.uuid5(_NAMESPACE, f"{run_id}:{stage_name}:{attempt}")


def artifact_id(object_key: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"artifact:{object_key}")


def now() -> datetime:
    return datetime.now(UTC)


async def upsert_stage_execution(
    session: AsyncSession,
    *,
    run_id: str,
    stage_name: str,
    attempt: int,
    values: dict[str, Any],
) -> uuid.UUID:
    exec_id = stage_execution_id(run_id, stage_name, attempt)
    row = {
        "id": exec_id,
        "run_id": uuid.UUID(run_id),
        "stage_name": stage_name,
        "attempt": attempt,
        **values,
    }
    stmt = pg_insert(StageExecution).values(**row)
    updates: dict[str, Any] = {k: stmt.excluded[k] for k in values}
    updates["updated_at"] = func.now()
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["run_id", "stage_name", "attempt"], set_=updates)
    )
    return exec_id


async def mark_lost_attempts(
    session: AsyncSession, *, run_id: str, stage_name: str, before_attempt: int
) -> int:
    """Earlier attempts still `running` belonged to a worker that died: close them as failed."""
    result = await session.execute(
        update(StageExecution)
        .where(
            StageExecution.run_id == uuid.UUID(run_id),
            StageExecution.stage_name == stage_name,
            StageExecution.attempt < before_attempt,
            StageExecution.status.in_(UNFINISHED_STAGE),
        )
        .values(status="failed", error="worker lost during the attempt", finished_at=now())
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def count_exit_code_failures(
    session: AsyncSession, *, run_id: str, stage_name: str, before_attempt: int
) -> int:
    """Attempts that ran and failed on their own exit code (lost workers do not count)."""
    result = await session.execute(
        select(func.count())
        .select_from(StageExecution)
        .where(
            StageExecution.run_id == uuid.UUID(run_id),
            StageExecution.stage_name == stage_name,
            StageExecution.attempt < before_attempt,
            StageExecution.status == "failed",
            StageExecution.exit_code.is_not(None),
        )
    )
    return int(result.scalar_one())


async def insert_log_chunk(
    session: AsyncSession,
    *,
    execution_id: uuid.UUID,
    seq: int,
    first_line: int,
    line_count: int,
    content: str,
) -> None:
    stmt = pg_insert(StageLogChunk).values(
        id=uuid.uuid5(execution_id, f"chunk:{seq}"),
        stage_execution_id=execution_id,
        seq=seq,
        first_line=first_line,
        line_count=line_count,
        content=content,
    )
    # A redone flush carries the same first line and possibly more lines: the longer one wins.
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["stage_execution_id", "seq"],
            set_={"line_count": stmt.excluded.line_count, "content": stmt.excluded.content},
        )
    )


async def delete_log_chunks(session: AsyncSession, execution_id: uuid.UUID) -> None:
    await session.execute(
        delete(StageLogChunk).where(StageLogChunk.stage_execution_id == execution_id)
    )


async def upsert_artifact(
    session: AsyncSession,
    *,
    run_id: str,
    execution_id: uuid.UUID,
    name: str,
    object_key: str,
    size_bytes: int,
    sha256: str,
    content_type: str | None,
) -> None:
    stmt = pg_insert(Artifact).values(
        id=artifact_id(object_key),
        run_id=uuid.UUID(run_id),
        stage_execution_id=execution_id,
        name=name,
        object_key=object_key,
        size_bytes=size_bytes,
        sha256=sha256,
        content_type=content_type,
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["object_key"],
            set_={"size_bytes": stmt.excluded.size_bytes, "sha256": stmt.excluded.sha256},
        )
    )


async def set_run_status(session: AsyncSession, run_id: str, **values: Any) -> None:
    await session.execute(
        update(PipelineRun)
        .where(PipelineRun.id == uuid.UUID(run_id))
        .values(**values, updated_at=func.now())
    )


async def close_unfinished_stages(session: AsyncSession, run_id: str, status: str) -> None:
    await session.execute(
        update(StageExecution)
        .where(
            StageExecution.run_id == uuid.UUID(run_id),
            StageExecution.status.in_(UNFINISHED_STAGE),
        )
        .values(status=status, finished_at=now(), updated_at=func.now())
    )


async def upsert_workflow_execution(session: AsyncSession, values: dict[str, Any]) -> None:
    stmt = pg_insert(WorkflowExecution).values(id=uuid.uuid4(), **values)
    keep: dict[str, Any] = {
        k: stmt.excluded[k] for k in values if k not in ("workflow_id", "run_id")
    }
    keep["updated_at"] = func.now()
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["workflow_id", "run_id"], set_=keep)
    )


async def close_workflow_execution(
    session: AsyncSession, *, workflow_id: str, run_id: str, status: str, error: str | None
) -> None:
    await session.execute(
        update(WorkflowExecution)
        .where(WorkflowExecution.workflow_id == workflow_id, WorkflowExecution.run_id == run_id)
        .values(status=status, closed_at=now(), error=error, updated_at=func.now())
    )
