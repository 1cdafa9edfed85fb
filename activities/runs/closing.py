"""Closing a stage attempt: its artifacts uploaded within the limits, its log's last lines
stored (or the whole log moved to the object store), its row closed with the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.runs.attempt_opening import AttemptOpening
from activities.runs.attempts import log_object_key, run_not_found, run_workspace
from activities.runs.bookkeeping import ride_out
from core.runs import artifacts as artifact_files
from core.runs import short_attempts, stage_records, stage_retries
from core.runs.failure_classes import FailureClassification, FailureSignals, classify
from core.runs.log_capture import LogCapture
from db.session import driver_connection
from forgeline.settings import Settings
from forgeline.statuses.runs import FailureClass, StageStatus
from infra.storage import ObjectStore
from workflows.runs_models import StageInput, StageResult

# Refused artifact paths named one by one in the stage's warnings; the rest are counted.
MAX_REFUSALS_SHOWN = 20


class AttemptCloser:
    def __init__(
        self,
        settings: Settings,
        session_maker: async_sessionmaker[AsyncSession],
        store: ObjectStore,
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.store = store

    async def close(
        self,
        inp: StageInput,
        attempt: int,
        opening: AttemptOpening,
        capture: LogCapture,
        next_chunk: Callable[[], int],
        status: StageStatus,
        exit_code: int | None,
        clock: float,
        error: str | None = None,
        signals: FailureSignals | None = None,
        notes: tuple[str, ...] = (),
    ) -> StageResult:
        warnings: list[str] = list(notes)  # the runner's (a Python version the host lacks)
        uploaded: list[artifact_files.UploadedArtifact] = []
        failure: FailureClassification | None = None
        if inp.stage.artifact_paths and status != StageStatus.CANCELLED:
            uploaded, refused, over = await self.artifacts(inp, attempt)
            warnings += refused + over
            if over and status == StageStatus.SUCCESS and inp.stage.on_artifact_limit == "fail":
                status, error = StageStatus.FAILED, f"artifact limit exceeded: {over[0]}"
                failure = FailureClassification(
                    FailureClass.CONFIG,
                    "the stage's artifacts exceeded the pipeline's artifact limits",
                    [error[:300]],
                )
        if (
            capture.truncated
            and status != StageStatus.CANCELLED
            and inp.stage.on_log_limit == "truncate"
        ):
            warnings.append(f"log truncated at {capture.limit_bytes} bytes")
        for note in warnings:
            capture.note(f"forgeline: warning: {note}")
        # The last lines are stored by the closing statement itself, not a flush of their own.
        summary = await capture.close(hand_back_last=True)
        if failure is None and status in (StageStatus.FAILED, StageStatus.TIMED_OUT):
            seen = signals or FailureSignals(exit_code=exit_code)
            seen = replace(
                seen,
                timed_out=seen.timed_out or status == StageStatus.TIMED_OUT,
                timeout_seconds=inp.stage.timeout_seconds,
                log_tail=summary.tail,  # masked as stored
            )
            failure = await asyncio.to_thread(classify, seen)
        duration_ms = int((time.monotonic() - clock) * 1000)
        log_key: str | None = None
        if summary.large:
            log_key = log_object_key(inp.run_id, inp.stage.name, attempt)
            await asyncio.to_thread(self.store.put_file, log_key, summary.spool_path, "text/plain")
        last = summary.last_chunk
        closed = stage_records.ClosedAttempt(
            status=status,
            exit_code=exit_code,
            duration_ms=duration_ms,
            log_size_bytes=summary.byte_count,
            log_line_count=summary.line_count,
            # The whole log now lives in the object store; the row keeps the tail.
            log_object_key=log_key,
            log_tail=summary.tail if log_key else None,
            error=error,
            final_chunk=None
            if last is None or log_key is not None
            else (next_chunk(), last.first_seq, len(last.lines), last.content),
            artifacts=uploaded,
            warnings=warnings,
            failure=failure,
        )
        if not uploaded and opening.take_over():
            # Ended before its row was opened: one statement opens and closes it.
            async def open_and_close_row() -> uuid.UUID | None:
                async with driver_connection(self.session_maker) as conn:
                    return await short_attempts.open_and_close_attempt(
                        conn,
                        run_id=inp.run_id,
                        stage_name=inp.stage.name,
                        attempt=attempt,
                        stage_id=inp.stage.stage_id,
                        runner=opening.runner,
                        container_name=opening.container_name,
                        closed=closed,
                    )

            written = await ride_out("writing a stage attempt", open_and_close_row)
            if written is None:
                raise run_not_found(inp.run_id)
            exec_id = written
        else:
            exec_id = (await opening.start()).execution_id  # the row to close exists

            async def close_row() -> None:
                async with driver_connection(self.session_maker) as conn:
                    await stage_records.close_attempt(
                        conn,
                        run_id=inp.run_id,
                        execution_id=exec_id,
                        attempt=attempt,
                        closed=closed,
                    )

            # The commands ran: their outcome is written however long the database takes.
            await ride_out("closing a stage attempt", close_row)
        if status == StageStatus.SUCCESS and attempt > 1:

            async def mark_flaky() -> None:
                async with driver_connection(self.session_maker) as conn:
                    await stage_retries.mark_passed_on_retry(
                        conn, run_id=inp.run_id, stage_name=inp.stage.name, attempt=attempt
                    )

            await ride_out("marking earlier attempts flaky", mark_flaky)
        with contextlib.suppress(OSError):
            summary.spool_path.unlink()
        return StageResult(
            stage_name=inp.stage.name,
            status=status,
            exit_code=exit_code,
            attempt=attempt,
            execution_id=str(exec_id),
            duration_ms=duration_ms,
            artifact_count=len(uploaded),
            error=error,
            failure_class=failure.failure_class if failure else None,
            warnings=warnings,
        )

    async def artifacts(
        self, inp: StageInput, attempt: int
    ) -> tuple[list[artifact_files.UploadedArtifact], list[str], list[str]]:
        """The stage's artifacts uploaded within the limits, the paths refused, and what the
        limits left out (in words)."""
        workspace = run_workspace(self.settings, inp.run_id)
        found = await asyncio.to_thread(
            artifact_files.collect_limited,
            workspace,
            inp.stage.artifact_paths,
            self.settings.artifact_max_files,
        )
        refused = [f"artifact path refused: {r}" for r in found.refused[:MAX_REFUSALS_SHOWN]]
        if len(found.refused) > MAX_REFUSALS_SHOWN:
            refused.append(f"{len(found.refused) - MAX_REFUSALS_SHOWN} more artifact paths refused")
        over = [found.over_limit] if found.over_limit else []
        prefix = artifact_files.artifact_prefix(inp.run_id, inp.stage.name, attempt)
        uploaded, left_out = await asyncio.to_thread(
            artifact_files.upload_within,
            self.store,
            prefix,
            found.files,
            self.settings.artifact_max_bytes,
        )
        if left_out:
            over.append(left_out)
        return uploaded, refused, over
