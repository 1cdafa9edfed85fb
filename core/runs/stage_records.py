"""Stage executions as Postgres rows: each attempt opened, its log chunks, closed with its
artifacts; skipped and reused stages; what an earlier attempt recorded. Idempotent upserts keyed by
deterministic IDs, so a retried activity never duplicates a row.

Core statements (not the ORM); the three statements of every stage attempt are plain SQL.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.runs.artifacts import UploadedArtifact
from core.runs.failure_classes import FailureClassification
from db.models.pipelines import StageExecution
from forgeline.statuses.runs import StageStatus

_NAMESPACE = uuid.UUID("6f1c8a55-8a57-4d0b-9a3e-3c1f0c6b2d11")


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


# The three statements every stage attempt runs (open, log chunk, close) are plain SQL on the
# asyncpg connection, one round trip each: they are on the path of every stage, and SQLAlchemy's
# statement construction costs several times the round trip (bench/README.md).
# Data-modifying CTEs run exactly once, whether or not the outer statement reads them.

# The earlier attempts of a stage, closed by whichever statement opens (or opens and closes) an
# attempt: $1 run, $2 stage, $3 attempt, $5 stage id, $8 ids of attempts Temporal started that
# died before their opening statement, $9 their error.
EARLIER_ATTEMPTS = """
lost AS (
    UPDATE stage_executions
    SET status = 'failed', error = 'worker lost during the attempt',
        failure_class = 'infrastructure', failure_cause = 'the runner was lost during the attempt',
        finished_at = now(), updated_at = now()
    WHERE run_id = $1 AND stage_name = $2 AND attempt < $3
      AND status IN ('pending', 'queued', 'running')
    RETURNING 1
), never_opened AS (
    -- Attempts Temporal started that died before their opening statement: recorded too.
    INSERT INTO stage_executions (id, run_id, stage_name, attempt, stage_id, status, error,
                                  failure_class, failure_cause, finished_at, log_size_bytes,
                                  log_line_count)
    SELECT earlier.id, $1, $2, earlier.attempt::int, $5, 'failed', $9, 'infrastructure', $9,
           now(), 0, 0
    FROM unnest($8::uuid[]) WITH ORDINALITY AS earlier(id, attempt)
    ON CONFLICT (run_id, stage_name, attempt) DO NOTHING
    RETURNING 1
)"""

_OPEN_ATTEMPT = (
    "WITH "  # noqa: S608 (constants only)
    + EARLIER_ATTEMPTS
    + """,
opened AS (
    INSERT INTO stage_executions (id, run_id, stage_name, attempt, stage_id, status, runner,
                                  container_name, started_at, log_size_bytes, log_line_count)
    VALUES ($4, $1, $2, $3, $5, 'running', $6, $7, now(), 0, 0)
    ON CONFLICT (run_id, stage_name, attempt) DO UPDATE SET
        stage_id = excluded.stage_id, status = 'running', runner = excluded.runner,
        container_name = excluded.container_name, started_at = excluded.started_at,
        finished_at = NULL, exit_code = NULL, error = NULL, duration_ms = NULL,
        log_size_bytes = 0, log_line_count = 0, log_object_key = NULL, log_tail = NULL,
        failure_class = NULL, failure_cause = NULL, failure_evidence = '{}', updated_at = now()
    RETURNING 1
), dropped AS (
    DELETE FROM stage_log_chunks WHERE stage_execution_id = $4 RETURNING 1
)
SELECT count(*) FROM opened
"""
)

NEVER_OPENED_ERROR = "worker lost before the attempt started"

_RECORD_NEVER_OPENED = """
INSERT INTO stage_executions (id, run_id, stage_name, attempt, stage_id, status, error,
                              failure_class, failure_cause, finished_at, log_size_bytes,
                              log_line_count)
SELECT started.id, $1, $2, started.attempt::int, $3, 'failed', $5, 'infrastructure', $5, now(),
       0, 0
FROM unnest($4::uuid[]) WITH ORDINALITY AS started(id, attempt)
ON CONFLICT (run_id, stage_name, attempt) DO NOTHING
"""


async def record_never_opened(
    conn: asyncpg.Connection, *, run_id: str, stage_name: str, stage_id: str | None, attempts: int
) -> None:
    """Rows for attempts 1..`attempts` that have none (each was lost before it opened one)."""
    await conn.execute(
        _RECORD_NEVER_OPENED,
        uuid.UUID(run_id),
        stage_name,
        uuid.UUID(stage_id) if stage_id else None,
        [stage_execution_id(run_id, stage_name, n) for n in range(1, attempts + 1)],
        NEVER_OPENED_ERROR,
    )


_STORE_LOG_CHUNK = """
INSERT INTO stage_log_chunks (id, stage_execution_id, seq, first_line, line_count, content)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (stage_execution_id, seq) DO UPDATE SET
    line_count = excluded.line_count, content = excluded.content
"""

_CLOSE_ATTEMPT = """
WITH final_chunk AS (
    INSERT INTO stage_log_chunks (id, stage_execution_id, seq, first_line, line_count, content)
    SELECT $11, $1, $12, $13, $14, $15 WHERE $15::text IS NOT NULL
    ON CONFLICT (stage_execution_id, seq) DO UPDATE SET
        line_count = excluded.line_count, content = excluded.content
    RETURNING 1
), dropped AS (
    DELETE FROM stage_log_chunks WHERE stage_execution_id = $1 AND $16::boolean RETURNING 1
)
UPDATE stage_executions
SET status = $2, exit_code = $3, finished_at = now(), duration_ms = $4, log_size_bytes = $5,
    log_line_count = $6, log_object_key = $7, log_tail = $8, error = $9,
    warnings = $17::text[], failure_class = $18, failure_cause = $19,
    failure_evidence = $20::text[], updated_at = now()
WHERE id = $1 AND attempt = $10
"""

_UPSERT_ARTIFACT = """
INSERT INTO artifacts (id, run_id, stage_execution_id, name, object_key, size_bytes, sha256,
                       content_type)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (object_key) DO UPDATE SET size_bytes = excluded.size_bytes, sha256 = excluded.sha256
"""


@dataclass(frozen=True)
class OpenedAttempt:
    """The attempt's row, opened (running) on a build host: stage tables only, never the run's
    variables (they reach the build host resolved, in its encrypted input)."""

    execution_id: uuid.UUID


@dataclass(frozen=True)
class ClosedAttempt:
    status: str
    exit_code: int | None
    duration_ms: int
    log_size_bytes: int
    log_line_count: int
    log_object_key: str | None = None
    log_tail: str | None = None
    error: str | None = None
    # Lines not stored yet: (seq, first line, line count, content), stored with the close.
    final_chunk: tuple[int, int, int, str] | None = None
    artifacts: list[UploadedArtifact] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # A failed or timed-out attempt's class, cause and evidence (masked log lines).
    failure: FailureClassification | None = None


async def run_opening(
    conn: asyncpg.Connection,
    statement: str,
    *,
    run_id: str,
    stage_name: str,
    attempt: int,
    stage_id: str | None,
    runner: str,
    container_name: str,
    more: tuple[Any, ...] = (),
) -> uuid.UUID | None:
    """Run a statement that opens an attempt: its $1-$9 are the run, stage, attempt, execution
    ID, stage ID, runner, container name, the earlier attempts' IDs and the never-opened error,
    then `more`. The execution's ID, or None when the run does not exist: the foreign key says
    so, without reading `pipeline_runs` (a build host's role may not)."""
    exec_id = stage_execution_id(run_id, stage_name, attempt)
    try:
        await conn.execute(
            statement,
            uuid.UUID(run_id),
            stage_name,
            attempt,
            exec_id,
            uuid.UUID(stage_id) if stage_id else None,
            runner,
            container_name,
            [stage_execution_id(run_id, stage_name, n) for n in range(1, attempt)],
            NEVER_OPENED_ERROR,
            *more,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        if "run_id" in (exc.constraint_name or ""):
            return None
        raise
    return exec_id


def final_chunk_args(execution_id: uuid.UUID, closed: ClosedAttempt) -> tuple[Any, ...]:
    """The closing statements' last lines: chunk ID, seq, first line, line count, content (all
    None when there are none)."""
    if closed.final_chunk is None:
        return (None, None, None, None, None)
    seq, first_line, line_count, content = closed.final_chunk
    return (log_chunk_id(execution_id, seq), seq, first_line, line_count, content)


def failure_args(closed: ClosedAttempt) -> tuple[Any, ...]:
    """The closing statements' failure class, cause and evidence."""
    failure = closed.failure
    if failure is None:
        return (None, None, [])
    return (failure.failure_class, failure.cause, failure.evidence)


async def open_attempt(
    conn: asyncpg.Connection,
    *,
    run_id: str,
    stage_name: str,
    attempt: int,
    stage_id: str | None,
    runner: str,
    container_name: str,
) -> OpenedAttempt | None:
    """Close attempts a dead worker left `running`, record the earlier attempts that never opened,
    and upsert this one as `running` (a replayed attempt starts its log at line 0 again). None
    when the run does not exist."""
    exec_id = await run_opening(
        conn,
        _OPEN_ATTEMPT,
        run_id=run_id,
        stage_name=stage_name,
        attempt=attempt,
        stage_id=stage_id,
        runner=runner,
        container_name=container_name,
    )
    return OpenedAttempt(execution_id=exec_id) if exec_id is not None else None


async def store_log_chunk(
    conn: asyncpg.Connection,
    *,
    execution_id: uuid.UUID,
    seq: int,
    first_line: int,
    line_count: int,
    content: str,
) -> None:
    """Idempotent per (execution, seq): a redone flush with more lines replaces the chunk."""
    await conn.execute(
        _STORE_LOG_CHUNK,
        log_chunk_id(execution_id, seq),
        execution_id,
        seq,
        first_line,
        line_count,
        content,
    )


async def close_attempt(
    conn: asyncpg.Connection,
    *,
    run_id: str,
    execution_id: uuid.UUID,
    attempt: int,
    closed: ClosedAttempt,
) -> None:
    """The attempt's final row with its last log lines (or, when the whole log moved to the
    object store, without its chunks) and its artifacts, in one transaction."""
    args = (
        execution_id,
        closed.status,
        closed.exit_code,
        closed.duration_ms,
        closed.log_size_bytes,
        closed.log_line_count,
        closed.log_object_key,
        closed.log_tail,
        closed.error,
        attempt,
        *final_chunk_args(execution_id, closed),
        closed.log_object_key is not None,
        closed.warnings,
        *failure_args(closed),
    )
    if not closed.artifacts:
        await conn.execute(_CLOSE_ATTEMPT, *args)
        return
    async with conn.transaction():
        await conn.executemany(
            _UPSERT_ARTIFACT,
            [
                (
                    artifact_id(a.object_key),
                    uuid.UUID(run_id),
                    execution_id,
                    a.name,
                    a.object_key,
                    a.size_bytes,
                    a.sha256,
                    a.content_type,
                )
                for a in closed.artifacts
            ],
        )
        await conn.execute(_CLOSE_ATTEMPT, *args)


# A reused stage shows the log of the attempt it reuses: the row takes its counters (and its
# object-store key, for a log that moved there) and a copy of its chunks. Idempotent.
_COPY_REUSED_LOG = text("""
WITH source AS (
    SELECT log_size_bytes, log_line_count, log_object_key, log_tail
    FROM stage_executions WHERE id = :source
), target AS (
    UPDATE stage_executions t
    SET log_size_bytes = s.log_size_bytes, log_line_count = s.log_line_count,
        log_object_key = s.log_object_key, log_tail = s.log_tail, updated_at = now()
    FROM source s WHERE t.id = :target
    RETURNING 1
)
INSERT INTO stage_log_chunks (id, stage_execution_id, seq, first_line, line_count, content)
SELECT gen_random_uuid(), :target, seq, first_line, line_count, content
FROM stage_log_chunks WHERE stage_execution_id = :source
ON CONFLICT (stage_execution_id, seq) DO NOTHING
""")


async def copy_reused_log(session: AsyncSession, *, target: uuid.UUID, source: uuid.UUID) -> None:
    await session.execute(_COPY_REUSED_LOG, {"target": target, "source": source})


def log_chunk_id(execution_id: uuid.UUID, seq: int) -> uuid.UUID:
    return uuid.uuid5(execution_id, f"chunk:{seq}")


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
            StageExecution.status == StageStatus.FAILED,
            StageExecution.exit_code.is_not(None),
        )
    )
    return int(result.scalar_one())
