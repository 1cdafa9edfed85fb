"""The control side's stage activities: a stage skipped, or reused from the run being re-run
(its log copied, its artifacts put back in the workspace). No build runs here."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.runs.attempts import run_workspace
from core.runs import artifacts as artifact_files
from core.runs import stage_records
from db.models.pipelines import Artifact
from db.session import session_scope
from forgeline.settings import Settings
from forgeline.statuses.runs import StageStatus
from infra.storage import ObjectStore
from workflows.contracts.runs import RECORD_STAGE_SKIPPED, REUSE_STAGE
from workflows.runs_models import ReuseStageInput, SkipStageInput, StageResult


async def _record_first_attempt(
    session: AsyncSession, inp: SkipStageInput | ReuseStageInput, values: dict[str, Any]
) -> uuid.UUID:
    """The stage's only attempt of this run, recorded without running it."""
    stage_id = uuid.UUID(inp.stage.stage_id) if inp.stage.stage_id else None
    return await stage_records.upsert_stage_execution(
        session,
        run_id=inp.run_id,
        stage_name=inp.stage.name,
        attempt=1,
        values={"stage_id": stage_id, **values},
    )


class StageBookkeepingActivities:
    def __init__(
        self,
        settings: Settings,
        session_maker: async_sessionmaker[AsyncSession],
        store: ObjectStore,
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.store = store

    @RECORD_STAGE_SKIPPED.implement
    async def record_stage_skipped(self, inp: SkipStageInput) -> StageResult:
        async with session_scope(self.session_maker) as session:
            exec_id = await _record_first_attempt(
                session,
                inp,
                {
                    "status": StageStatus.SKIPPED,
                    "skip_reason": inp.reason,
                    "finished_at": stage_records.now(),
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
            exec_id = await _record_first_attempt(
                session,
                inp,
                {
                    "status": StageStatus.SUCCESS,
                    "exit_code": inp.reused.exit_code,
                    "reused_from_id": source_id,
                    "started_at": stage_records.now(),
                    "finished_at": stage_records.now(),
                    "duration_ms": 0,
                },
            )
            await stage_records.copy_reused_log(session, target=exec_id, source=source_id)
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
