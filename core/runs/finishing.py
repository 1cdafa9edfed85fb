"""Closing a finished run: its final status, the stages it left open, the operators' row, the
usage record of the build minutes it used, and its workspace removed."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from decimal import ROUND_UP, Decimal
from pathlib import Path
from typing import Any

import asyncpg

from core.notifications.sources import run_event_kind
from core.runs import run_records
from forgeline.statuses.billing import UsageType
from forgeline.statuses.runs import RunStatus, StageStatus
from infra.runners.sandbox_workspace import remove_run_state, run_state_dir
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


# A cancelled run's stages that were running end cancelled: their last attempt, even when its
# process ended with a failure of its own once the cancel was under way (killed, or failing).
_CUT_SHORT = """
UPDATE stage_executions cut SET status = 'cancelled', updated_at = now()
WHERE cut.run_id = $1 AND cut.stage_name = ANY($2::text[]) AND cut.status = 'failed'
  AND cut.attempt = (SELECT max(last.attempt) FROM stage_executions last
                     WHERE last.run_id = $1 AND last.stage_name = cut.stage_name)
"""


async def close_run(
    conn: asyncpg.Connection, inp: FinishRunInput
) -> run_records.FinishedRun | None:
    """Final status, unfinished stages closed (a cancelled run's `cancelled_stages` too),
    operator row closed. Idempotent. None when the run does not exist."""
    cancelled = inp.status == RunStatus.CANCELLED
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
    if run is not None and run.status == RunStatus.CANCELLED and inp.cancelled_stages:
        await conn.execute(_CUT_SHORT, uuid.UUID(inp.run_id), inp.cancelled_stages)
    return run


def may_notify(run: run_records.FinishedRun) -> bool:
    """Whether the notifications' rule (core/notifications/sources.run_event_kind) gives an
    event for what closing the run returned: only then are they read and announced."""
    return run_event_kind(run.organization_id, run.status, run.previous_status) is not None


def build_minutes_usage(run_id: str, run: run_records.FinishedRun) -> dict[str, Any]:
    """The usage record of a finished run's build minutes, keyed so that it counts once."""
    return {
        "organization_id": run.organization_id,
        "project_id": run.project_id,
        "usage_type": UsageType.BUILD_MINUTES,
        "quantity": build_minutes(run.build_ms),
        "idempotency_key": f"pipeline-run-{run_id}:build_minutes",
        "source_refs": {"pipeline_run_id": run_id, "pipeline_id": str(run.pipeline_id)},
    }


async def remove_workspace(workspace: Path) -> None:
    """An empty workspace (nothing cloned, nothing written) goes at once; a full one is removed
    on a thread, off the event loop; the sandbox's home and /tmp of the run with it."""
    if run_state_dir(workspace).exists():
        await asyncio.to_thread(remove_run_state, workspace)
    try:
        workspace.rmdir()
    except FileNotFoundError:
        return
    except OSError:
        await asyncio.to_thread(shutil.rmtree, workspace, ignore_errors=True)
