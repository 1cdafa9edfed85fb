"""What the stage activities share: their errors, a run's workspace, where a large log goes,
and the recorded outcome of an earlier attempt (an attempt that ended is not run again)."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError

from activities.runs.bookkeeping import ride_out
from core.runs import recorded_attempts, stage_retries
from db.session import driver_connection
from forgeline.settings import Settings
from forgeline.statuses.runs import RETRIED_FAILURE_CLASSES, StageStatus
from infra.storage import join_key
from workflows.runs_models import (
    RUN_NOT_FOUND_ERROR,
    STAGE_FAILED_ERROR,
    STAGE_INVALID_ERROR,
    STAGE_TIMED_OUT_ERROR,
    StageInput,
    StageResult,
)


def environment_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApplicationError(
            f"deploy environment {value!r} is not an ID",
            type=STAGE_INVALID_ERROR,
            non_retryable=True,
        ) from None


def run_not_found(run_id: str) -> ApplicationError:
    return ApplicationError(
        f"pipeline run {run_id} not found", type=RUN_NOT_FOUND_ERROR, non_retryable=True
    )


async def timed_out_error(
    session_maker: async_sessionmaker[AsyncSession],
    inp: StageInput,
    attempt: int,
    exit_code: int | None,
) -> ApplicationError:
    """`attempt` hit its stage timeout: retryable while the stage's own retries last (a run
    whose workflow lists the timeout as non-retryable never retries it)."""
    stage = inp.stage
    retryable = False
    if stage.retry_count > 0:

        async def count() -> int:
            async with driver_connection(session_maker) as conn:
                return await stage_retries.count_retries_used(
                    conn, run_id=inp.run_id, stage_name=stage.name, before_attempt=attempt
                )

        used = await ride_out("counting retried attempts", count)
        retryable = stage_retries.timeout_retried(
            retries_used_before=used, retry_count=stage.retry_count
        )
    return ApplicationError(
        f"stage {stage.name} timed out after {stage.timeout_seconds}s",
        {"exit_code": exit_code},
        type=STAGE_TIMED_OUT_ERROR,
        non_retryable=not retryable,
    )


def run_workspace(settings: Settings, run_id: str) -> Path:
    return settings.workspaces_dir / str(uuid.UUID(run_id))


def log_object_key(run_id: str, stage: str, attempt: int) -> str:
    return join_key("runs", run_id, "logs", stage, f"{attempt}.log")


async def recorded_outcome(
    session_maker: async_sessionmaker[AsyncSession], inp: StageInput, attempt: int
) -> StageResult | None:
    """The result of `attempt` when it ended on its own: success is returned, a final failure
    raised again (a stop at the log limit or the run's disk quota included). None when it must
    run again (lost mid-way, never opened, a runner error, a retryable exit or timeout)."""
    stage = inp.stage

    async def read() -> recorded_attempts.RecordedAttempt | None:
        async with driver_connection(session_maker) as conn:
            return await recorded_attempts.recorded_attempt(
                conn, run_id=inp.run_id, stage_name=stage.name, attempt=attempt
            )

    row = await ride_out("reading the previous attempt", read)
    if row is None:
        return None
    details = {"exit_code": row.exit_code}
    if row.status == StageStatus.SUCCESS:
        return StageResult(
            stage_name=stage.name,
            status=StageStatus.SUCCESS,
            exit_code=row.exit_code,
            attempt=row.attempt,
            execution_id=str(row.execution_id),
            duration_ms=row.duration_ms,
            artifact_count=row.artifact_count,
        )
    if row.status == StageStatus.TIMED_OUT:
        timed_out = await timed_out_error(session_maker, inp, row.attempt, row.exit_code)
        if timed_out.non_retryable:
            raise timed_out
        return None  # retried: this attempt is the retry
    if (
        row.status == StageStatus.FAILED
        and row.error is not None
        and row.failure_class is not None
        and row.failure_class not in RETRIED_FAILURE_CLASSES
    ):
        # Stopped by Forgeline (log limit, disk quota, artifact limits): final as it was when
        # the attempt raised it, whether or not the process had exited.
        raise ApplicationError(
            f"stage {stage.name}: {row.error}",
            details,
            type=STAGE_FAILED_ERROR,
            non_retryable=True,
        )
    if row.status == StageStatus.FAILED and row.exit_code is not None:
        retryable = stage_retries.retried(
            failure_class=row.failure_class,
            class_failures_before=row.class_failures_before,
            exit_code=row.exit_code,
            retryable_exit_codes=stage.retryable_exit_codes,
            exit_failures_before=row.exit_failures_before,
            retry_count=stage.retry_count,
        )
        if not retryable:
            raise ApplicationError(
                f"stage {stage.name} exited with {row.exit_code}",
                details,
                type=STAGE_FAILED_ERROR,
                non_retryable=True,
            )
    return None
