"""The stage activities: run one attempt (heartbeating, log capture, artifacts), skip, reuse.

One `stage_executions` row per attempt, keyed by (run, stage, attempt). Cancellation arrives through
the heartbeat and kills the container/process group before the row is closed as `cancelled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.pipelines import artifacts as artifact_files
from activities.pipelines import projections
from activities.pipelines.log_capture import LogCapture, LogChunk, SecretMasker
from activities.runners import Runner, StageProcess, process_name, process_prefix
from activities.storage import ObjectStore, join_key
from db.models.pipelines import Artifact
from db.session import driver_connection, session_scope
from forgeline import environment_variables as env_vars
from forgeline.crypto import decrypt_str
from forgeline.settings import Settings
from workflows.pipeline_models import (
    RUN_NOT_FOUND_ERROR,
    STAGE_FAILED_ERROR,
    STAGE_INVALID_ERROR,
    STAGE_TIMED_OUT_ERROR,
    ReuseStageInput,
    SkipStageInput,
    StageInput,
    StageResult,
    StageStatus,
)

HEARTBEAT_SECONDS = 1.0


def _environment_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApplicationError(
            f"deploy environment {value!r} is not an ID",
            type=STAGE_INVALID_ERROR,
            non_retryable=True,
        ) from None


def run_workspace(settings: Settings, run_id: str) -> Path:
    return settings.workspaces_dir / str(uuid.UUID(run_id))


def log_object_key(run_id: str, stage: str, attempt: int) -> str:
    return join_key("runs", run_id, "logs", stage, f"{attempt}.log")


def run_variables(settings: Settings, encrypted: str | None) -> tuple[dict[str, str], list[str]]:
    """Run-level variables (decrypted here only) and the secret values to mask."""
    if not encrypted:
        return {}, []
    items = json.loads(decrypt_str(encrypted, settings))
    env = {str(v["name"]): str(v["value"]) for v in items}
    secrets = [str(v["value"]) for v in items if v.get("secret")]
    return env, secrets


class StageActivities:
    def __init__(
        self,
        settings: Settings,
        session_maker: async_sessionmaker[AsyncSession],
        store: ObjectStore,
        runner: Runner,
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.store = store
        self.runner = runner

    @activity.defn(name="execute_stage")
    async def execute_stage(self, inp: StageInput) -> StageResult:
        info = activity.info()
        attempt = info.attempt
        stage = inp.stage
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
        deploy_environment = (
            _environment_uuid(stage.deploy_environment_id) if stage.deploy_environment_id else None
        )
        async with driver_connection(self.session_maker) as conn:
            opened = await projections.open_attempt(
                conn,
                run_id=inp.run_id,
                stage_name=stage.name,
                attempt=attempt,
                stage_id=stage.stage_id,
                runner=self.runner.kind,
                container_name=name,
                environment_id=deploy_environment,
            )
        if opened is None:
            raise ApplicationError(
                f"pipeline run {inp.run_id} not found", type=RUN_NOT_FOUND_ERROR, non_retryable=True
            )
        exec_id = opened.execution_id
        variables, secrets = run_variables(self.settings, opened.env_vars_encrypted)
        # Precedence: run > environment > project. Secrets are decrypted here only.
        project_vars = opened.project_config.get("environment_variables") or []
        environment_vars = opened.environment_config.get("environment_variables") or []
        secrets = [
            *secrets,
            *env_vars.secret_values(project_vars, self.settings),
            *env_vars.secret_values(environment_vars, self.settings),
        ]
        env = {
            **stage.environment,
            **env_vars.reveal(project_vars, self.settings),
            **env_vars.reveal(environment_vars, self.settings),
            **variables,
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
        chunk_seq = 0
        lock = asyncio.Lock()

        async def sink(chunk: LogChunk) -> None:
            nonlocal chunk_seq
            async with driver_connection(self.session_maker) as conn:
                await projections.store_log_chunk(
                    conn,
                    execution_id=exec_id,
                    seq=chunk_seq,
                    first_line=chunk.first_seq,
                    line_count=len(chunk.lines),
                    content=chunk.content,
                )
            chunk_seq += 1

        spool = self.settings.data_dir / "spool" / f"{exec_id}.log"
        capture = LogCapture(sink, SecretMasker(secrets), spool)

        async def on_output(data: bytes) -> None:
            async with lock:
                await capture.feed(data)

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT_SECONDS)
                activity.heartbeat({"lines": capture.next_seq})
                async with lock:
                    await capture.tick()

        process = StageProcess(
            name=name,
            script=stage.script,
            workspace=workdir,
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
            outcome = await self.runner.run(process, on_output)
        except asyncio.CancelledError:
            closing = self._close(
                inp, attempt, capture, lambda: chunk_seq, "cancelled", None, clock
            )
            await asyncio.shield(asyncio.gather(stop_beat(), return_exceptions=True))
            await asyncio.shield(closing)
            raise
        except Exception as exc:
            await stop_beat()
            await self._close(
                inp, attempt, capture, lambda: chunk_seq, "failed", None, clock, str(exc)
            )
            raise
        await stop_beat()
        status: StageStatus = "success"
        if outcome.timed_out:
            status = "timed_out"
        elif outcome.exit_code != 0:
            status = "failed"
        result = await self._close(
            inp,
            attempt,
            capture,
            lambda: chunk_seq,
            status,
            outcome.exit_code,
            clock,
            f"timed out after {stage.timeout_seconds}s" if outcome.timed_out else None,
        )
        if status == "timed_out":
            raise ApplicationError(
                f"stage {stage.name} timed out after {stage.timeout_seconds}s",
                {"exit_code": outcome.exit_code},
                type=STAGE_TIMED_OUT_ERROR,
                non_retryable=True,
            )
        if status == "failed":
            raise await self._failure(inp, attempt, outcome.exit_code)
        return result

    async def _failure(self, inp: StageInput, attempt: int, exit_code: int) -> ApplicationError:
        """Flaky exit codes retry up to retry_count times; everything else fails at once."""
        stage = inp.stage
        async with session_scope(self.session_maker) as session:
            earlier = await projections.count_exit_code_failures(
                session, run_id=inp.run_id, stage_name=stage.name, before_attempt=attempt
            )
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
        capture: LogCapture,
        next_chunk: Callable[[], int],
        status: StageStatus,
        exit_code: int | None,
        clock: float,
        error: str | None = None,
    ) -> StageResult:
        # The last lines are stored by the closing statement itself, not a flush of their own.
        summary = await capture.close(hand_back_last=True)
        duration_ms = int((time.monotonic() - clock) * 1000)
        log_key: str | None = None
        if summary.large:
            log_key = log_object_key(inp.run_id, inp.stage.name, attempt)
            await asyncio.to_thread(self.store.put_file, log_key, summary.spool_path, "text/plain")
        uploaded: list[artifact_files.UploadedArtifact] = []
        if inp.stage.artifact_paths and status != "cancelled":
            workspace = run_workspace(self.settings, inp.run_id)
            files, refused = await asyncio.to_thread(
                artifact_files.collect, workspace, inp.stage.artifact_paths
            )
            if refused:
                activity.logger.warning("artifact paths refused: %s", refused)
            prefix = artifact_files.artifact_prefix(inp.run_id, inp.stage.name, attempt)
            uploaded = await asyncio.to_thread(artifact_files.upload, self.store, prefix, files)
        exec_id = projections.stage_execution_id(inp.run_id, inp.stage.name, attempt)
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
            artifacts=[
                projections.ArtifactRow(
                    name=item.name,
                    object_key=item.object_key,
                    size_bytes=item.size_bytes,
                    sha256=item.sha256,
                    content_type=item.content_type,
                )
                for item in uploaded
            ],
        )
        async with driver_connection(self.session_maker) as conn:
            await projections.close_attempt(
                conn, run_id=inp.run_id, execution_id=exec_id, attempt=attempt, closed=closed
            )
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

    @activity.defn(name="record_stage_skipped")
    async def record_stage_skipped(self, inp: SkipStageInput) -> StageResult:
        async with session_scope(self.session_maker) as session:
            exec_id = await projections.upsert_stage_execution(
                session,
                run_id=inp.run_id,
                stage_name=inp.stage.name,
                attempt=1,
                values={
                    "stage_id": uuid.UUID(inp.stage.stage_id) if inp.stage.stage_id else None,
                    "status": "skipped",
                    "skip_reason": inp.reason,
                    "finished_at": projections.now(),
                },
            )
        return StageResult(
            stage_name=inp.stage.name,
            status="skipped",
            execution_id=str(exec_id),
            skip_reason=inp.reason,
        )

    @activity.defn(name="reuse_stage")
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
                    "status": "success",
                    "exit_code": inp.reused.exit_code,
                    "reused_from_id": source_id,
                    "started_at": projections.now(),
                    "finished_at": projections.now(),
                    "duration_ms": 0,
                },
            )
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
            status="success",
            exit_code=inp.reused.exit_code,
            execution_id=str(exec_id),
            reused=True,
        )
