"""One commit status on the forge for one run state. Separate from the run's workflow, so a
forge that is down or rate-limiting never fails or delays the run; its report arrives later."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.contracts.integrations import REPORT_COMMIT_STATUS
    from workflows.integrations_models import (
        COMMIT_STATUS_MAX_ATTEMPTS,
        CommitStatusInput,
        CommitStatusResult,
    )

# Backoff for forge outages; a rate limit's Retry-After overrides the interval of one attempt.
REPORT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=30),
    maximum_attempts=COMMIT_STATUS_MAX_ATTEMPTS,
)


@workflow.defn(name="CommitStatusWorkflow")
class CommitStatusWorkflow:
    @workflow.run
    async def run(self, inp: CommitStatusInput) -> CommitStatusResult:
        try:
            return await REPORT_COMMIT_STATUS.execute(
                inp, start_to_close_timeout=timedelta(seconds=30), retry_policy=REPORT_RETRY
            )
        except ActivityError as exc:
            # Given up (or refused by the forge): recorded in the result, never a failure.
            cause = exc.cause
            return CommitStatusResult(reported=False, reason=str(cause or exc)[:500])
