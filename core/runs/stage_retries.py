"""Whether a failed stage attempt is tried again: for its failure class (infrastructure and
flaky failures, a bounded number of times), for an exit code the pipeline declared retryable, or
for its stage timeout (both up to the stage's retry_count, one budget for the two). Code and
config failures are not retried."""

from __future__ import annotations

import uuid

import asyncpg

from forgeline.statuses.runs import RETRIED_FAILURE_CLASSES

# Automatic retries of a stage for infrastructure or flaky failures, on top of its own
# retry_count (the workflow's attempt budget bounds both).
CLASS_RETRIES = 2


def retried(
    *,
    failure_class: str | None,
    class_failures_before: int,
    exit_code: int,
    retryable_exit_codes: list[int],
    exit_failures_before: int,
    retry_count: int,
) -> bool:
    if failure_class in RETRIED_FAILURE_CLASSES and class_failures_before < CLASS_RETRIES:
        return True
    return exit_code in retryable_exit_codes and exit_failures_before < retry_count


def timeout_retried(*, retries_used_before: int, retry_count: int) -> bool:
    """A timed-out attempt is tried again while the stage's own retries are not used up: the
    earlier timed-out attempts and the earlier exit failures retried for their exit code."""
    return retries_used_before < retry_count


# Earlier attempts that used the stage's own retries: timed out, or failed on an exit code
# outside the retried failure classes (those have a budget of their own).
RETRIES_USED_BEFORE_SQL = """
SELECT count(*) FROM stage_executions e
WHERE e.run_id = $1 AND e.stage_name = $2 AND e.attempt < $3
  AND (e.status = 'timed_out'
       OR (e.status = 'failed' AND e.exit_code IS NOT NULL
           AND (e.failure_class IS NULL OR NOT e.failure_class = ANY($4::text[]))))
"""


async def count_retries_used(
    conn: asyncpg.Connection, *, run_id: str, stage_name: str, before_attempt: int
) -> int:
    """Earlier attempts of the stage that used its own retries (see RETRIES_USED_BEFORE_SQL)."""
    count = await conn.fetchval(
        RETRIES_USED_BEFORE_SQL,
        uuid.UUID(run_id),
        stage_name,
        before_attempt,
        [str(c) for c in RETRIED_FAILURE_CLASSES],
    )
    return int(count or 0)


_CLASS_FAILURES = """
SELECT count(*) FROM stage_executions
WHERE run_id = $1 AND stage_name = $2 AND attempt < $3 AND status = 'failed'
  AND exit_code IS NOT NULL AND failure_class = ANY($4::text[])
"""


async def count_class_failures(
    conn: asyncpg.Connection, *, run_id: str, stage_name: str, before_attempt: int
) -> int:
    """Earlier attempts that failed on their own exit with a class that is retried."""
    count = await conn.fetchval(
        _CLASS_FAILURES,
        uuid.UUID(run_id),
        stage_name,
        before_attempt,
        [str(c) for c in RETRIED_FAILURE_CLASSES],
    )
    return int(count or 0)


# A failure read as the repository's (or unknown) that a later attempt passed was flaky.
_PASSED_ON_RETRY = """
UPDATE stage_executions
SET failure_class = 'flaky',
    failure_cause = 'passed on a retry (first read as: '
        || coalesce(failure_cause, 'unknown') || ')',
    updated_at = now()
WHERE run_id = $1 AND stage_name = $2 AND attempt < $3 AND status = 'failed'
  AND failure_class = 'code'
"""


async def mark_passed_on_retry(
    conn: asyncpg.Connection, *, run_id: str, stage_name: str, attempt: int
) -> None:
    """`attempt` succeeded: the earlier attempts classed `code` were flaky. Idempotent."""
    await conn.execute(_PASSED_ON_RETRY, uuid.UUID(run_id), stage_name, attempt)
