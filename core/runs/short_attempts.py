"""A stage attempt that ended before its row was opened: opened and closed in one statement.

A stage's row is opened while its process runs; a stage that ends within a few milliseconds
(a no-op, a check that fails fast) needs only its final row. The statement does what opening
does (close the attempts a dead worker left `running`, record the earlier attempts that never
opened, drop a replayed attempt's chunks) and writes the final row with its last log lines, in
one round trip and one transaction. Idempotent: a retry writes the same row again.
"""

from __future__ import annotations

import uuid

import asyncpg

from core.runs.stage_records import (
    EARLIER_ATTEMPTS,
    ClosedAttempt,
    failure_args,
    final_chunk_args,
    run_opening,
    stage_execution_id,
)

# $1 run, $2 stage, $3 attempt, $4 execution id, $5 stage id, $6 runner, $7 container name,
# $8 earlier attempts' ids, $9 never-opened error; the final row: $10 status, $11 exit code,
# $12 duration (ms), $13 log bytes, $14 log lines, $15 log object key, $16 log tail, $17 error,
# $18 warnings, $19 failure class, $20 failure cause, $21 failure evidence; the last lines:
# $22 chunk id, $23 seq, $24 first line, $25 line count, $26 content (NULL: none).
# Data-modifying CTEs each touch rows no other one does: earlier attempts (lost, never_opened),
# this attempt's row (attempt_row), its chunks other than the final one (dropped) and the final
# chunk (the outer insert, whose foreign key is checked at the end of the statement).
_OPEN_AND_CLOSE = (
    "WITH "  # noqa: S608 (constants only)
    + EARLIER_ATTEMPTS
    + """,
dropped AS (
    DELETE FROM stage_log_chunks
    WHERE stage_execution_id = $4 AND seq IS DISTINCT FROM $23::int
    RETURNING 1
), attempt_row AS (
    INSERT INTO stage_executions (id, run_id, stage_name, attempt, stage_id, status, runner,
                                  container_name, started_at, finished_at, exit_code, duration_ms,
                                  log_size_bytes, log_line_count, log_object_key, log_tail, error,
                                  warnings, failure_class, failure_cause, failure_evidence)
    VALUES ($4, $1, $2, $3, $5, $10, $6, $7, now() - $12::int * interval '1 millisecond', now(),
            $11, $12, $13, $14, $15, $16, $17, $18::text[], $19, $20, $21::text[])
    ON CONFLICT (run_id, stage_name, attempt) DO UPDATE SET
        stage_id = excluded.stage_id, status = excluded.status, runner = excluded.runner,
        container_name = excluded.container_name, started_at = excluded.started_at,
        finished_at = excluded.finished_at, exit_code = excluded.exit_code,
        duration_ms = excluded.duration_ms, log_size_bytes = excluded.log_size_bytes,
        log_line_count = excluded.log_line_count, log_object_key = excluded.log_object_key,
        log_tail = excluded.log_tail, error = excluded.error, warnings = excluded.warnings,
        failure_class = excluded.failure_class, failure_cause = excluded.failure_cause,
        failure_evidence = excluded.failure_evidence, updated_at = now()
    RETURNING 1
)
INSERT INTO stage_log_chunks (id, stage_execution_id, seq, first_line, line_count, content)
SELECT $22, $4, $23, $24, $25, $26
FROM attempt_row
WHERE $26::text IS NOT NULL
ON CONFLICT (stage_execution_id, seq) DO UPDATE SET
    first_line = excluded.first_line, line_count = excluded.line_count, content = excluded.content
"""
)


async def open_and_close_attempt(
    conn: asyncpg.Connection,
    *,
    run_id: str,
    stage_name: str,
    attempt: int,
    stage_id: str | None,
    runner: str,
    container_name: str,
    closed: ClosedAttempt,
) -> uuid.UUID | None:
    """The attempt's final row (and last log lines) without a `running` row before it. Only
    for an attempt without artifacts (their rows need the attempt's row first). The execution's
    ID, or None when the run does not exist (its foreign key says so)."""
    if closed.artifacts:
        raise ValueError("an attempt with artifacts is opened before it is closed")
    return await run_opening(
        conn,
        _OPEN_AND_CLOSE,
        run_id=run_id,
        stage_name=stage_name,
        attempt=attempt,
        stage_id=stage_id,
        runner=runner,
        container_name=container_name,
        more=(
            closed.status,
            closed.exit_code,
            closed.duration_ms,
            closed.log_size_bytes,
            closed.log_line_count,
            closed.log_object_key,
            closed.log_tail,
            closed.error,
            closed.warnings,
            *failure_args(closed),
            *final_chunk_args(stage_execution_id(run_id, stage_name, attempt), closed),
        ),
    )
