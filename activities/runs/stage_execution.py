"""The build host's stage activity: run one attempt (heartbeating, log capture, artifacts).

One `stage_executions` row per attempt, keyed by (run, stage, attempt). Cancellation arrives through
the heartbeat and kills the container/process group before the row is closed as `cancelled`.
`execute_stage` runs on build hosts (the `builds` task queue): it holds no keys and reads no
variables; the stage's resolved variables arrive in its (encrypted) input from the control plane.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.runs.attempt_opening import AttemptOpening
from activities.runs.attempts import (
    environment_uuid,
    recorded_outcome,
    run_not_found,
    run_workspace,
    timed_out_error,
)
from activities.runs.bookkeeping import ride_out
from activities.runs.closing import AttemptCloser
from activities.runs.stage_caching import restore_cache, save_cache, service_processes
from core.runs import stage_records as projections
from core.runs import stage_retries
from core.runs.failure_classes import FailureSignals
from core.runs.log_capture import LogCapture, LogChunk, OutputPace
from core.runs.run_limits import (
    RunDiskWatch,
    disk_quota_marker,
    run_disk_mb,
    run_spool_dir,
    stage_log_limit,
)
from db.session import driver_connection, session_scope
from forgeline.secret_masking import SecretMasker
from forgeline.settings import Settings
from forgeline.statuses.runs import FailureClass, StageStatus
from infra.runners import Runner, StageOutcome, StageProcess, process_name, process_prefix
from infra.runners.base import run_stage
from infra.storage import ObjectStore
from workflows.contracts.runs import EXECUTE_STAGE
from workflows.runs_models import (
    STAGE_FAILED_ERROR,
    STAGE_INVALID_ERROR,
    FinishRunInput,
    ResolvedVariables,
    StageInput,
    StageResult,
)

HEARTBEAT_SECONDS = 1.0
# At most this long for the last stage to close its run (else the workflow's finish step does).
FINISH_SECONDS = 10.0


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
        self.closer = AttemptCloser(settings, session_maker, store)
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
            recorded = await recorded_outcome(self.session_maker, inp, attempt - 1)
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
            environment_uuid(stage.deploy_environment_id)
        exec_id = projections.stage_execution_id(inp.run_id, stage.name, attempt)
        # The row is opened while the process runs (or by the closing statement, if it ends first).
        opening = AttemptOpening(
            lambda: self._open(inp, attempt, name), runner=self.runner.kind, container_name=name
        )
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
            await opening.start()  # the row exists and a replayed attempt's chunks are gone

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

        spool_dir = run_spool_dir(self.settings.data_dir, inp.run_id)
        # The plan and the pipeline may keep less log than the operator allows, never more.
        log_limit = stage_log_limit(
            self.settings.stage_log_max_bytes, inp.limits, stage.log_max_bytes
        )
        stop = asyncio.Event()  # the log limit (when it fails the stage) or the run's disk
        capture = LogCapture(
            sink,
            SecretMasker(secrets),
            spool_dir / f"{exec_id}.log",
            limit_bytes=log_limit,
            on_limit=stop.set if stage.on_log_limit == "fail" else None,
        )
        disk_mb = run_disk_mb(self.settings.build_disk_mb, inp.limits)
        disk = RunDiskWatch(workspace, spool_dir, disk_mb, stop.set)

        pace = OutputPace(self.settings.stage_log_rate_bytes)

        async def on_output(data: bytes) -> None:
            busy = capture.busy_seconds
            async with lock:
                await capture.feed(data)
            await pace.take(len(data), capture.busy_seconds - busy)

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
            disk_mb=disk_mb,
            network=stage.network_enabled,
            labels={"forgeline.run_id": inp.run_id, "forgeline.stage": stage.name},
            services=service_processes(stage.services),
        )
        beat = asyncio.create_task(heartbeat())
        watch = asyncio.create_task(disk.watch())

        async def stop_beat() -> None:
            beat.cancel()
            watch.cancel()
            await asyncio.gather(beat, watch, return_exceptions=True)

        clock = time.monotonic()
        try:
            # The runner's home of the run on the host (`~/...` cache paths), when it has one.
            home = await self.runner.stage_home(workspace) if stage.cache else None
            restored = await restore_cache(self.store, stage, workdir, workspace, capture, home)
            outcome = await self._run_while_opening(process, on_output, opening.opened, stop)
        except asyncio.CancelledError:
            closing = self.closer.close(
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
            await self.closer.close(
                inp,
                attempt,
                opening,
                capture,
                lambda: chunk_seq,
                StageStatus.FAILED,
                None,
                clock,
                str(exc),
                FailureSignals(runner_error=capture.masker.mask(str(exc))),
            )
            raise
        if outcome is not None and outcome.exit_code == 0 and not outcome.timed_out:
            await save_cache(self.store, stage, restored, workdir, workspace, capture, home)
        await stop_beat()
        status = StageStatus.SUCCESS
        error: str | None = None
        log_limit_reached = False
        if outcome is None and disk.over:
            status = StageStatus.FAILED
            error = f"stage stopped: the run's workspace and logs reached {disk_mb} MB"
            capture.note(disk_quota_marker(disk_mb))
        elif outcome is None or (capture.truncated and stage.on_log_limit == "fail"):
            status = StageStatus.FAILED
            error = f"stage stopped: its log reached the limit of {log_limit} bytes"
            log_limit_reached = True
        elif outcome.timed_out:
            status = StageStatus.TIMED_OUT
            error = f"timed out after {stage.timeout_seconds}s"
        elif outcome.exit_code != 0:
            status = StageStatus.FAILED
        exit_code = outcome.exit_code if outcome is not None else None
        signals = FailureSignals(
            exit_code=exit_code,
            timed_out=outcome is not None and outcome.timed_out,
            log_limit_reached=log_limit_reached,
        )
        result = await self.closer.close(
            inp,
            attempt,
            opening,
            capture,
            lambda: chunk_seq,
            status,
            exit_code,
            clock,
            error,
            signals,
            notes=outcome.notes if outcome is not None else (),
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
            raise await timed_out_error(self.session_maker, inp, attempt, exit_code)
        if status == StageStatus.FAILED:
            raise await self._failure(inp, attempt, exit_code or 0, result.failure_class)
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
        running = asyncio.ensure_future(run_stage(self.runner, process, on_output))
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

    async def _failure(
        self, inp: StageInput, attempt: int, exit_code: int, failure_class: FailureClass | None
    ) -> ApplicationError:
        """Infrastructure and flaky failures retry a bounded number of times, exit codes the
        pipeline declared retryable up to retry_count times; everything else fails at once."""
        stage = inp.stage

        async def count() -> tuple[int, int]:
            async with session_scope(self.session_maker) as session:
                exits = await projections.count_exit_code_failures(
                    session, run_id=inp.run_id, stage_name=stage.name, before_attempt=attempt
                )
            async with driver_connection(self.session_maker) as conn:
                classed = await stage_retries.count_class_failures(
                    conn, run_id=inp.run_id, stage_name=stage.name, before_attempt=attempt
                )
            return exits, classed

        earlier, classed = await ride_out("counting failed attempts", count)
        retryable = stage_retries.retried(
            failure_class=failure_class,
            class_failures_before=classed,
            exit_code=exit_code,
            retryable_exit_codes=stage.retryable_exit_codes,
            exit_failures_before=earlier,
            retry_count=stage.retry_count,
        )
        kind = f" ({failure_class})" if failure_class else ""
        return ApplicationError(
            f"stage {stage.name} exited with {exit_code}{kind}",
            {"exit_code": exit_code, "failure_class": failure_class},
            type=STAGE_FAILED_ERROR,
            non_retryable=not retryable,
        )
