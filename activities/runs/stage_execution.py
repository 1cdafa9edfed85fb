"""The stage activities: run one attempt (heartbeating, log capture, artifacts), skip, reuse.

One `stage_executions` row per attempt, keyed by (run, stage, attempt). Cancellation arrives through
the heartbeat and kills the container/process group before the row is closed as `cancelled`.
`execute_stage` runs on build hosts (the `builds` task queue): it holds no keys and reads no
variables; the stage's resolved variables arrive in its (encrypted) input from the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.runs.bookkeeping import ride_out
from core.runs import artifacts as artifact_files
from core.runs import stage_records as projections
from core.runs.log_capture import LogCapture, LogChunk, OutputPace
from db.models.pipelines import Artifact
from db.session import driver_connection, session_scope
from forgeline.secret_masking import SecretMasker
from forgeline.settings import Settings
from forgeline.statuses.runs import StageStatus
from infra.runners import Runner, StageOutcome, StageProcess, process_name, process_prefix
from infra.storage import ObjectStore, join_key
from workflows.contracts.runs import EXECUTE_STAGE, RECORD_STAGE_SKIPPED, REUSE_STAGE
from workflows.runs_models import (
    RUN_NOT_FOUND_ERROR,
    STAGE_FAILED_ERROR,
    STAGE_INVALID_ERROR,
    STAGE_TIMED_OUT_ERROR,
    FinishRunInput,
    ResolvedVariables,
    ReuseStageInput,
    SkipStageInput,
    StageInput,
    StageResult,
)

HEARTBEAT_SECONDS = 1.0
# At most this long for the last stage to close its run (else the workflow's finish step does).
FINISH_SECONDS = 10.0
# Refused artifact paths named one by one in the stage's warnings; the rest are counted.
MAX_REFUSALS_SHOWN = 20


def _environment_uuid(value: str) -> uuid.UUID:
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


def run_workspace(settings: Settings, run_id: str) -> Path:
    return settings.workspaces_dir / str(uuid.UUID(run_id))


def log_object_key(run_id: str, stage: str, attempt: int) -> str:
    return join_key("runs", run_id, "logs", stage, f"{attempt}.log")


class StageActivities:
    def __init__(
        self,
        settings: Settings,
        session_maker: async_sessionmaker[AsyncSession],
        store: ObjectStore,
        runner: Runner,
        finish_run: Callable[[FinishRunInput], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.store = store
        self.runner = runner
        # The run activities' finish_run, where they share a process: the last stage closes its
        # run when it succeeds (never on a build host, which does not write runs).
        self.finish_run = finish_run

    @EXECUTE_STAGE.implement
    async def execute_stage(self, inp: StageInput) -> StageResult:
        info = activity.info()
        attempt = info.attempt
        stage = inp.stage
        if attempt > 1:
            # The previous attempt ran to its end but Temporal never took its result (an outage
            # longer than the heartbeat timeout): its recorded outcome stands, nothing runs again.
            recorded = await self._recorded_outcome(inp, attempt - 1)
            if recorded is not None:
                return recorded
        name = process_name(inp.run_id, stage.name, attempt)
        workspace = run_workspace(self.settings, inp.run_id)
        workdir = workspace
        if stage.working_directory:
            workdir = (workspace / stage.working_directory).resolve()
            if not workdir.is_relative_to(workspace.resolve()):
                raise ApplicationError(
                    "working_directory leaves the workspace",
                    type=STAGE_INVALID_ERROR,
                    non_retryable=True,
                )
        # Whatever an earlier attempt left running (a crashed worker's container) goes first.
        await self.runner.remove_stale(process_prefix(inp.run_id, stage.name))
        if stage.deploy_environment_id:
            _environment_uuid(stage.deploy_environment_id)
        exec_id = projections.stage_execution_id(inp.run_id, stage.name, attempt)
        # The attempt's row is opened while the process starts.
        opening = asyncio.ensure_future(self._open(inp, attempt, name))
        # Resolved and decrypted by the control plane for this stage (the deploy environment's
        # variables when it names one): this host holds no key and reads no variables table.
        variables = inp.variables or ResolvedVariables()
        env = {
            **stage.environment,
            **variables.env,
            "CI": "true",
            "FORGELINE": "true",
            "FORGELINE_RUN_ID": inp.run_id,
            "FORGELINE_RUN_NUMBER": str(inp.run_number),
            "FORGELINE_STAGE": stage.name,
            "FORGELINE_ATTEMPT": str(attempt),
            # Branch and commit reach the script only as data, never spliced into it.
            "FORGELINE_BRANCH": inp.branch or "",
            "FORGELINE_COMMIT_SHA": inp.commit_sha or "",
        }
        secrets = variables.secrets
        chunk_seq = 0
        lock = asyncio.Lock()

        async def sink(chunk: LogChunk) -> None:
            nonlocal chunk_seq
            await opening  # the row exists and a replayed attempt's chunks are gone

            async def store() -> None:
                async with driver_connection(self.session_maker) as conn:
                    await projections.store_log_chunk(
                        conn,
                        execution_id=exec_id,
                        seq=chunk_seq,
                        first_line=chunk.first_seq,
                        line_count=len(chunk.lines),
                        content=chunk.content,
                    )

            await ride_out("storing a log chunk", store)
            chunk_seq += 1

        spool = self.settings.data_dir / "spool" / f"{exec_id}.log"
        # The pipeline may keep less log than the operator allows, never more.
        log_limit = min(
            self.settings.stage_log_max_bytes,
            stage.log_max_bytes or self.settings.stage_log_max_bytes,
        )
        log_full = asyncio.Event()
        capture = LogCapture(
            sink, SecretMasker(secrets), spool, limit_bytes=log_limit, on_limit=log_full.set
        )

        pace = OutputPace(self.settings.stage_log_rate_bytes)

        async def on_output(data: bytes) -> None:
            async with lock:
                await capture.feed(data)
            await pace.take(len(data))

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT_SECONDS)
                activity.heartbeat({"lines": capture.next_seq})
                if not lock.locked():  # output being stored is stored by its own flush
                    async with lock:
                        await capture.tick()

        process = StageProcess(
            name=name,
            script=stage.script,
            workspace=workdir,
            root=workspace,
            timeout_seconds=stage.timeout_seconds,
            image=stage.image,
            env=env,
            cpus=stage.cpus,
            memory_mb=stage.memory_mb,
            pids_limit=stage.pids_limit,
            network=stage.network_enabled,
            labels={"forgeline.run_id": inp.run_id, "forgeline.stage": stage.name},
        )
        beat = asyncio.create_task(heartbeat())

        async def stop_beat() -> None:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)

        clock = time.monotonic()
        try:
            outcome = await self._run_while_opening(
                process, on_output, opening, log_full if stage.on_log_limit == "fail" else None
            )
        except asyncio.CancelledError:
            closing = self._close(
                inp,
                attempt,
                opening,
                capture,
                lambda: chunk_seq,
                StageStatus.CANCELLED,
                None,
                clock,
            )
            await asyncio.shield(asyncio.gather(stop_beat(), return_exceptions=True))
            await asyncio.shield(closing)
            raise
        except Exception as exc:
            await stop_beat()
            await self._close(
                inp,
                attempt,
                opening,
                capture,
                lambda: chunk_seq,
                StageStatus.FAILED,
                None,
                clock,
                str(exc),
            )
            raise
        await stop_beat()
        status = StageStatus.SUCCESS
        error: str | None = None
        if outcome is None or (capture.truncated and stage.on_log_limit == "fail"):
            status = StageStatus.FAILED
            error = f"stage stopped: its log reached the limit of {log_limit} bytes"
        elif outcome.timed_out:
            status = StageStatus.TIMED_OUT
            error = f"timed out after {stage.timeout_seconds}s"
        elif outcome.exit_code != 0:
            status = StageStatus.FAILED
        exit_code = outcome.exit_code if outcome is not None else None
        result = await self._close(
            inp, attempt, opening, capture, lambda: chunk_seq, status, exit_code, clock, error
        )
        status = result.status  # artifacts past their limit may fail a successful stage
        if status == StageStatus.FAILED and result.error is not None:
            # Stopped at the log limit, or failed by its artifacts' limits: never retried.
            raise ApplicationError(
                f"stage {stage.name}: {result.error}",
                {"exit_code": exit_code},
                type=STAGE_FAILED_ERROR,
                non_retryable=True,
            )
        if status == StageStatus.TIMED_OUT:
            raise ApplicationError(
                f"stage {stage.name} timed out after {stage.timeout_seconds}s",
                {"exit_code": exit_code},
                type=STAGE_TIMED_OUT_ERROR,
                non_retryable=True,
            )
        if status == StageStatus.FAILED:
            raise await self._failure(inp, attempt, exit_code or 0)
        if inp.finish is not None and self.finish_run is not None:
            # Bounded well inside the heartbeat timeout: this attempt must not be lost (and its
            # stage run again) over bookkeeping that the workflow can do itself.
            beat_timeout = activity.info().heartbeat_timeout
            limit = (
                min(FINISH_SECONDS, beat_timeout.total_seconds() / 2)
                if beat_timeout
                else FINISH_SECONDS
            )
            try:
                async with asyncio.timeout(limit):
                    await self.finish_run(inp.finish)
            except Exception as exc:
                # The stage stands; the workflow closes the run with its own step instead.
                activity.logger.warning("closing run %s after its last stage: %s", inp.run_id, exc)
            else:
                result = result.model_copy(update={"run_finished": True})
        return result

    async def _open(self, inp: StageInput, attempt: int, name: str) -> projections.OpenedAttempt:
        async def open_row() -> projections.OpenedAttempt | None:
            async with driver_connection(self.session_maker) as conn:
                return await projections.open_attempt(
                    conn,
                    run_id=inp.run_id,
                    stage_name=inp.stage.name,
                    attempt=attempt,
                    stage_id=inp.stage.stage_id,
                    runner=self.runner.kind,
                    container_name=name,
                )

        opened = await ride_out("opening a stage attempt", open_row)
        if opened is None:
            raise run_not_found(inp.run_id)
        return opened

    async def _run_while_opening(
        self,
        process: StageProcess,
        on_output: Callable[[bytes], Awaitable[None]],
        opening: asyncio.Future[projections.OpenedAttempt],
        stop: asyncio.Event | None = None,
    ) -> StageOutcome | None:
        """The process runs while the attempt's row is being opened. If opening fails, the
        process is killed and the failure raised: the attempt is retried like any lost write.
        When `stop` is set first, the process is killed and None returned."""
        running = asyncio.ensure_future(self.runner.run(process, on_output))
        stopping = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            await asyncio.wait((running, opening), return_when=asyncio.FIRST_COMPLETED)
            if opening.done() and opening.exception() is not None:
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                opening.result()
            if stopping is not None:
                await asyncio.wait((running, stopping), return_when=asyncio.FIRST_COMPLETED)
                if not running.done():
                    running.cancel()
                    await asyncio.gather(running, return_exceptions=True)
                    return None
            return await running
        except BaseException:
            # Cancelled (the activity, or the failed opening above): the runner kills the process.
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            raise
        finally:
            if stopping is not None:
                stopping.cancel()

    async def _failure(self, inp: StageInput, attempt: int, exit_code: int) -> ApplicationError:
        """Flaky exit codes retry up to retry_count times; everything else fails at once."""
        stage = inp.stage

        async def count() -> int:
            async with session_scope(self.session_maker) as session:
                return await projections.count_exit_code_failures(
                    session, run_id=inp.run_id, stage_name=stage.name, before_attempt=attempt
                )

        earlier = await ride_out("counting failed attempts", count)
        retryable = exit_code in stage.retryable_exit_codes and earlier < stage.retry_count
        return ApplicationError(
            f"stage {stage.name} exited with {exit_code}",
            {"exit_code": exit_code},
            type=STAGE_FAILED_ERROR,
            non_retryable=not retryable,
        )

    async def _close(
        self,
        inp: StageInput,
        attempt: int,
        opening: asyncio.Future[projections.OpenedAttempt],
        capture: LogCapture,
        next_chunk: Callable[[], int],
        status: StageStatus,
        exit_code: int | None,
        clock: float,
        error: str | None = None,
    ) -> StageResult:
        warnings: list[str] = []
        uploaded: list[artifact_files.UploadedArtifact] = []
        if inp.stage.artifact_paths and status != StageStatus.CANCELLED:
            uploaded, refused, over = await self._artifacts(inp, attempt)
            warnings += refused + over
            if over and status == StageStatus.SUCCESS and inp.stage.on_artifact_limit == "fail":
                status, error = StageStatus.FAILED, f"artifact limit exceeded: {over[0]}"
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
        duration_ms = int((time.monotonic() - clock) * 1000)
        log_key: str | None = None
        if summary.large:
            log_key = log_object_key(inp.run_id, inp.stage.name, attempt)
            await asyncio.to_thread(self.store.put_file, log_key, summary.spool_path, "text/plain")
        last = summary.last_chunk
        closed = projections.ClosedAttempt(
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
        )
        exec_id = (await opening).execution_id  # the row to close exists

        async def close_row() -> None:
            async with driver_connection(self.session_maker) as conn:
                await projections.close_attempt(
                    conn, run_id=inp.run_id, execution_id=exec_id, attempt=attempt, closed=closed
                )

        # The commands ran: their outcome is written however long the database takes to return.
        await ride_out("closing a stage attempt", close_row)
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
        )

    async def _artifacts(
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

    async def _recorded_outcome(self, inp: StageInput, attempt: int) -> StageResult | None:
        """The result of `attempt` when it ended on its own: success is returned, a final failure
        raised again. None when it must run again (lost mid-way, never opened, a retryable exit)."""
        stage = inp.stage

        async def read() -> projections.RecordedAttempt | None:
            async with driver_connection(self.session_maker) as conn:
                return await projections.recorded_attempt(
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
            raise ApplicationError(
                f"stage {stage.name} timed out after {stage.timeout_seconds}s",
                details,
                type=STAGE_TIMED_OUT_ERROR,
                non_retryable=True,
            )
        if row.status == StageStatus.FAILED and row.exit_code is not None:
            retryable = (
                row.exit_code in stage.retryable_exit_codes
                and row.exit_failures_before < stage.retry_count
            )
            if not retryable:
                raise ApplicationError(
                    f"stage {stage.name} exited with {row.exit_code}",
                    details,
                    type=STAGE_FAILED_ERROR,
                    non_retryable=True,
                )
        return None

    @RECORD_STAGE_SKIPPED.implement
    async def record_stage_skipped(self, inp: SkipStageInput) -> StageResult:
        async with session_scope(self.session_maker) as session:
            exec_id = await projections.upsert_stage_execution(
                session,
                run_id=inp.run_id,
                stage_name=inp.stage.name,
                attempt=1,
                values={
                    "stage_id": uuid.UUID(inp.stage.stage_id) if inp.stage.stage_id else None,
                    "status": StageStatus.SKIPPED,
                    "skip_reason": inp.reason,
                    "finished_at": projections.now(),
                },
            )
        return StageResult(
            stage_name=inp.stage.name,
            status=StageStatus.SKIPPED,
            execution_id=str(exec_id),
            skip_reason=inp.reason,
        )

    @REUSE_STAGE.implement
    async def reuse_stage(self, inp: ReuseStageInput) -> StageResult:
        source_id = uuid.UUID(inp.reused.execution_id)
        async with session_scope(self.session_maker) as session:
            exec_id = await projections.upsert_stage_execution(
                session,
                run_id=inp.run_id,
                stage_name=inp.stage.name,
                attempt=1,
                values={
                    "stage_id": uuid.UUID(inp.stage.stage_id) if inp.stage.stage_id else None,
                    "status": StageStatus.SUCCESS,
                    "exit_code": inp.reused.exit_code,
                    "reused_from_id": source_id,
                    "started_at": projections.now(),
                    "finished_at": projections.now(),
                    "duration_ms": 0,
                },
            )
            await projections.copy_reused_log(session, target=exec_id, source=source_id)
            produced = (
                await session.execute(
                    select(Artifact.name, Artifact.object_key).where(
                        Artifact.stage_execution_id == source_id
                    )
                )
            ).all()
        # Later stages may need what the reused stage built: put its artifacts back.
        workspace = run_workspace(self.settings, inp.run_id)
        for name, key in produced:
            await asyncio.to_thread(artifact_files.restore, self.store, key, workspace, name)
        return StageResult(
            stage_name=inp.stage.name,
            status=StageStatus.SUCCESS,
            exit_code=inp.reused.exit_code,
            execution_id=str(exec_id),
            reused=True,
        )
