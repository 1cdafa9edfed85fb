"""How PipelineRunWorkflow tells its own cancellation from a failure, wherever it is waiting when
the cancel arrives, so that a cancelled run is always closed `cancelled`, never `failed`.

Temporal hands the cancel to code awaiting an activity or a child workflow directly (the
checkout, a skip's bookkeeping) as an ActivityError / ChildWorkflowError caused by a
CancelledError, not as asyncio's CancelledError: both mean the run was cancelled."""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from forgeline.statuses.runs import RunStatus, StageStatus
    from workflows.contracts.runs import FINISH_RUN
    from workflows.run_policies import BOOKKEEPING, BOOKKEEPING_TIMEOUT
    from workflows.runs_models import FinishRunInput

# Patch: a cancel that reaches an activity awaited directly (the checkout, a skip) cancels the
# run, which it used to fail; a cancel that arrives while the run is being closed lets the close
# end instead of leaving the run open.
CANCELLED_RUN_PATCH = "cancelled-run-stays-cancelled"
BY_REQUEST = "cancelled by request"


def run_cancelled(exc: BaseException) -> bool:
    """Whether `exc` is the run's cancellation, however it surfaced."""
    if isinstance(exc, asyncio.CancelledError):
        return True
    return (
        is_cancelled_exception(exc)
        and workflow.cancellation_reason() is not None
        and workflow.patched(CANCELLED_RUN_PATCH)
    )


def cut_short(status: RunStatus, stages: dict[str, StageStatus]) -> list[str]:
    """The stages a cancelled run closes as cancelled (their last attempt, however its process
    ended once the cancel was under way: killed, or failing on its own)."""
    if status != RunStatus.CANCELLED:
        return []
    return sorted(name for name, st in stages.items() if st == StageStatus.CANCELLED)


def failure_text(exc: BaseException) -> str:
    """What failed the run, for its `error` column: the activity's or child's own error."""
    cause = exc.cause if isinstance(exc, (ActivityError, ChildWorkflowError)) else None
    return str(cause or exc)


async def close_run(finish: FinishRunInput) -> None:
    """The finish step (final status, slot, stages left open, usage). It is the run's last act:
    a cancel that arrives meanwhile does not interrupt it, so the run never stays open, and the
    status it closes with (the run ended before the cancel) stands."""
    task = asyncio.ensure_future(
        FINISH_RUN.execute_local(
            finish, start_to_close_timeout=BOOKKEEPING_TIMEOUT, retry_policy=BOOKKEEPING
        )
    )
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not workflow.patched(CANCELLED_RUN_PATCH):
            task.cancel()  # as before the patch: the close is cancelled and its error raised
        await task
