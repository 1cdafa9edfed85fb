"""Timeouts and retry policies of PipelineRunWorkflow's steps."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.runs_models import RUN_NOT_FOUND_ERROR, STAGE_INVALID_ERROR, STAGE_TIMED_OUT_ERROR

# Projection writes and bookkeeping: short, retried on anything but bad input, for up to ~20
# minutes (a database restart is ridden out; a write that can never succeed ends).
BOOKKEEPING = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=120,
    non_retryable_error_types=[RUN_NOT_FOUND_ERROR, STAGE_INVALID_ERROR],
)
BOOKKEEPING_TIMEOUT = timedelta(seconds=60)
CHECKOUT_TIMEOUT = timedelta(minutes=10)
# Extra attempts for infrastructure failures (worker lost, engine hiccup) on top of the stage's
# own retry_count; exit-code retries are counted by the activity against retry_count.
INFRA_ATTEMPTS = 3
# The runner enforces the stage timeout exactly; the activity gets this much more to kill,
# collect artifacts and move the log, so a timeout is recorded as `timed_out` with its log.
STAGE_GRACE = timedelta(seconds=60)
# Patch: an attempt that hit its stage timeout is retried while the stage's own retries last
# (the activity counts them); runs started before never retry a timed-out attempt.
RETRY_TIMED_OUT_STAGES = "retry-timed-out-stages"


def final_stage_errors(retry_count: int) -> list[str]:
    """The stage activity's error types that end the stage at once, whatever the activity says.
    Called from the workflow: a stage with retries records the patch marker."""
    if retry_count > 0 and workflow.patched(RETRY_TIMED_OUT_STAGES):
        return [STAGE_INVALID_ERROR]
    return [STAGE_TIMED_OUT_ERROR, STAGE_INVALID_ERROR]
