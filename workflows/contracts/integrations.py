"""Every activity of the forge-integration domain: registered name, input, output and the errors
that are never retried. Pure: importable inside the workflow sandbox.
"""

from __future__ import annotations

from workflows.contract import ActivityContract
from workflows.integrations_models import (
    DELIVERY_NOT_FOUND_ERROR,
    FORGE_REJECTED_ERROR,
    ChangedPaths,
    ChangedPathsInput,
    CommentResult,
    CommitStatusInput,
    CommitStatusResult,
    DeliveryOutcome,
    ForgeEvent,
    PullRequestRef,
    ScheduledRun,
    ScheduledRunInput,
    StartedRuns,
    StartRunsInput,
    TriggerCandidates,
)

# Pipelines of the event's project whose ref/event/type filters match (paths come later).
MATCH_TRIGGERS = ActivityContract("integrations.match_triggers", ForgeEvent, TriggerCandidates)
# Paths changed by the pushed range or the pull request, computed from git.
COMPUTE_CHANGED_PATHS = ActivityContract(
    "integrations.compute_changed_paths", ChangedPathsInput, ChangedPaths
)
# Apply path filters, create one run per matching pipeline (once per delivery), start them.
START_RUNS = ActivityContract("integrations.start_runs", StartRunsInput, StartedRuns)
# The delivery row's final status.
RECORD_DELIVERY_OUTCOME = ActivityContract(
    "integrations.record_delivery_outcome",
    DeliveryOutcome,
    type(None),
    non_retryable=(DELIVERY_NOT_FOUND_ERROR,),
)
# One commit status on the forge; rate limits are retried after the delay the forge asks for.
REPORT_COMMIT_STATUS = ActivityContract(
    "integrations.report_commit_status",
    CommitStatusInput,
    CommitStatusResult,
    non_retryable=(FORGE_REJECTED_ERROR,),
)
# A schedule's firing: one run of the pipeline with trigger=schedule, once per firing.
START_SCHEDULED_RUN = ActivityContract(
    "integrations.start_scheduled_run", ScheduledRunInput, ScheduledRun
)
# The pull request's pr_tracking row from a pull/merge request event.
RECORD_PULL_REQUEST = ActivityContract("integrations.record_pull_request", ForgeEvent, type(None))
# The pull request's CI status per pipeline, coverage from its runs' reports, quality score.
SUMMARIZE_PULL_REQUEST = ActivityContract(
    "integrations.summarize_pull_request", PullRequestRef, type(None)
)
# The pull request's one comment on the forge, created once and edited afterwards.
PUBLISH_PULL_REQUEST_COMMENT = ActivityContract(
    "integrations.publish_pull_request_comment",
    PullRequestRef,
    CommentResult,
    non_retryable=(FORGE_REJECTED_ERROR,),
)
