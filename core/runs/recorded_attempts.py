"""How the last recorded attempt of a stage ended: what a retried attempt reads before it
decides to run the stage's commands again or to reuse that outcome."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

_LAST_ATTEMPT = """
SELECT s.id, s.attempt, s.status, s.exit_code, s.duration_ms, s.error,
       (SELECT count(*) FROM artifacts a WHERE a.stage_execution_id = s.id) AS artifact_count,
       (SELECT count(*) FROM stage_executions e
        WHERE e.run_id = s.run_id AND e.stage_name = s.stage_name AND e.attempt < s.attempt
          AND e.status = 'failed' AND e.exit_code IS NOT NULL) AS exit_failures_before,
       s.failure_class,
       (SELECT count(*) FROM stage_executions e
        WHERE e.run_id = s.run_id AND e.stage_name = s.stage_name AND e.attempt < s.attempt
          AND e.status = 'failed' AND e.exit_code IS NOT NULL
          AND e.failure_class IN ('infrastructure', 'flaky')) AS class_failures_before
FROM stage_executions s
WHERE s.run_id = $1 AND s.stage_name = $2 AND s.attempt <= $3
ORDER BY s.attempt DESC
LIMIT 1
"""


@dataclass(frozen=True)
class RecordedAttempt:
    """How an earlier attempt of a stage ended, as its row says."""

    execution_id: uuid.UUID
    attempt: int
    status: str
    exit_code: int | None
    duration_ms: int | None
    error: str | None
    artifact_count: int
    exit_failures_before: int
    failure_class: str | None = None
    class_failures_before: int = 0  # earlier attempts retried for their failure class


async def recorded_attempt(
    conn: asyncpg.Connection, *, run_id: str, stage_name: str, attempt: int
) -> RecordedAttempt | None:
    """The row of the last attempt up to `attempt` that has one (None when none opened): an
    attempt that only reused an earlier attempt's recorded outcome has no row of its own."""
    row = await conn.fetchrow(_LAST_ATTEMPT, uuid.UUID(run_id), stage_name, attempt)
    if row is None:
        return None
    return RecordedAttempt(
        execution_id=row[0],
        attempt=row[1],
        status=row[2],
        exit_code=row[3],
        duration_ms=row[4],
        error=row[5],
        artifact_count=int(row[6]),
        exit_failures_before=int(row[7]),
        failure_class=row[8],
        class_failures_before=int(row[9]),
    )
