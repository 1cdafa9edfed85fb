"""Closing a finished run: its final status, the stages it left open, the operators' row, the
build minutes it used (recorded once), and its workspace removed."""

from __future__ import annotations

import asyncio
import shutil
from decimal import ROUND_UP, Decimal
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.billing.metering import record_usage_on
from core.runs import run_records
from db.session import driver_connection
from forgeline.statuses.billing import UsageType
from forgeline.statuses.runs import RunStatus, StageStatus
from workflows.runs_models import FinishRunInput

# The operators' workflow_executions status of a run that ended so.
WORKFLOW_STATUS = {
    RunStatus.SUCCESS: "completed",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
}


def build_minutes(total_ms: int) -> Decimal:
    """Billed to the hundredth of a minute, rounded up (a 1 ms build is not free)."""
    return (Decimal(total_ms) / Decimal(60_000)).quantize(Decimal("0.01"), rounding=ROUND_UP)


async def finish_run(session_maker: async_sessionmaker[AsyncSession], inp: FinishRunInput) -> bool:
    """Final status, unfinished stages closed, one build_minutes record, operator row closed.
    Idempotent: a retry records nothing twice. False when the run does not exist."""
    cancelled = inp.status == RunStatus.CANCELLED
    async with driver_connection(session_maker) as conn:
        run = await run_records.finish_run(
            conn,
            run_id=inp.run_id,
            status=inp.status,
            error=inp.error,
            unfinished_stage_status=StageStatus.CANCELLED if cancelled else StageStatus.FAILED,
            workflow_status=WORKFLOW_STATUS[inp.status],
            workflow_id=inp.workflow_id,
            workflow_run_id=inp.workflow_run_id,
            spec_hashes=inp.spec_hashes,
        )
        if run is None:
            return False
        if run.organization_id is not None:
            # A retry finds the run finished already and records the minutes once.
            await record_usage_on(
                conn,
                organization_id=run.organization_id,
                project_id=run.project_id,
                usage_type=UsageType.BUILD_MINUTES,
                quantity=build_minutes(run.build_ms),
                idempotency_key=f"pipeline-run-{inp.run_id}:build_minutes",
                source_refs={"pipeline_run_id": inp.run_id, "pipeline_id": str(run.pipeline_id)},
            )
    return True


async def remove_workspace(workspace: Path) -> None:
    """An empty workspace (nothing cloned, nothing written) goes at once; a full one is removed
    on a thread, off the event loop."""
    try:
        workspace.rmdir()
    except FileNotFoundError:
        return
    except OSError:
        await asyncio.to_thread(shutil.rmtree, workspace, ignore_errors=True)
