"""A pull request's report: its CI status per pipeline, coverage and quality score recomputed, then
its one forge comment written. One workflow per pull request (signal-with-start on
`pr-report-{project}-{number}`), so concurrent pushes and run updates never write the comment at
the same time: requests arriving while a report is written are folded into one more pass. The
forge being down or rate-limiting delays the comment, never a run."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.contracts.integrations import (
        PUBLISH_PULL_REQUEST_COMMENT,
        SUMMARIZE_PULL_REQUEST,
    )
    from workflows.integrations_models import (
        COMMIT_STATUS_MAX_ATTEMPTS,
        CommentResult,
        PullRequestRef,
    )

SUMMARY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=20,
)
# As for commit statuses: about a day of backoff; a rate limit's Retry-After sets one interval.
COMMENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=30),
    maximum_attempts=COMMIT_STATUS_MAX_ATTEMPTS,
)
# Passes one execution makes before it continues as new (bounded history).
MAX_PASSES = 200


@workflow.defn(name="PullRequestReportWorkflow")
class PullRequestReportWorkflow:
    def __init__(self) -> None:
        self._requested = False

    @workflow.signal
    def refresh(self) -> None:
        self._requested = True

    @workflow.run
    async def run(self, inp: PullRequestRef) -> CommentResult:
        result = CommentResult(published=False, reason="nothing to report")
        passes = 0
        # Started by signal-with-start: the start itself is a request.
        self._requested = True
        while self._requested:
            self._requested = False
            passes += 1
            result = await self._report(inp)
            if passes >= MAX_PASSES and self._requested:
                workflow.continue_as_new(inp)
        return result

    async def _report(self, inp: PullRequestRef) -> CommentResult:
        try:
            await SUMMARIZE_PULL_REQUEST.execute(
                inp, start_to_close_timeout=timedelta(minutes=2), retry_policy=SUMMARY_RETRY
            )
            return await PUBLISH_PULL_REQUEST_COMMENT.execute(
                inp, start_to_close_timeout=timedelta(seconds=60), retry_policy=COMMENT_RETRY
            )
        except ActivityError as exc:
            # Given up or refused: recorded in the result, never a failure of anything else.
            return CommentResult(published=False, reason=str(exc.cause or exc)[:500])
