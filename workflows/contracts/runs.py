"""Every activity of the runs domain: its registered name, input, output and the errors that are
never retried. The names are part of recorded histories and never change.

Pure: importable inside the workflow sandbox.
"""

from __future__ import annotations

from workflows.contract import ActivityContract
from workflows.runs_models import (
    RUN_NOT_FOUND_ERROR,
    STAGE_INVALID_ERROR,
    CheckoutResult,
    FinishRunInput,
    LostAttemptsInput,
    PipelineRunInput,
    ReuseStageInput,
    RunPlan,
    RunStarted,
    SkipStageInput,
    SlotClaim,
    SlotRequest,
    StageInput,
    StageResult,
)

# Bookkeeping never succeeds on a run that is gone or a stage that cannot be valid.
BOOKKEEPING_ERRORS = (RUN_NOT_FOUND_ERROR, STAGE_INVALID_ERROR)
# A repository that cannot be cloned (unreachable, refused URL) is not cloned by retrying.
GIT_ERROR = "GitError"

# Load the plan and claim one of the organization's build slots (or queue for one).
PREPARE_RUN = ActivityContract(
    "prepare_run", PipelineRunInput, RunPlan, non_retryable=BOOKKEEPING_ERRORS
)
# Mark the run running, record workflow_executions, check out the commit.
START_RUN = ActivityContract(
    "start_run", RunStarted, CheckoutResult, non_retryable=(RUN_NOT_FOUND_ERROR, GIT_ERROR)
)
# One attempt of one stage, on a build host. A timed-out attempt is retried while its stage's
# retries last: the workflow's policy (workflows/run_policies.py) decides which runs may.
EXECUTE_STAGE = ActivityContract(
    "execute_stage", StageInput, StageResult, non_retryable=(STAGE_INVALID_ERROR,)
)
RECORD_STAGE_SKIPPED = ActivityContract(
    "record_stage_skipped", SkipStageInput, StageResult, non_retryable=BOOKKEEPING_ERRORS
)
REUSE_STAGE = ActivityContract(
    "reuse_stage", ReuseStageInput, StageResult, non_retryable=BOOKKEEPING_ERRORS
)
FINISH_RUN = ActivityContract(
    "finish_run", FinishRunInput, type(None), non_retryable=BOOKKEEPING_ERRORS
)
# The stage's last attempt was lost (timed out) before any later attempt could record it: every
# attempt Temporal started gets its row.
RECORD_LOST_ATTEMPTS = ActivityContract(
    "record_lost_attempts", LostAttemptsInput, type(None), non_retryable=BOOKKEEPING_ERRORS
)
# A run waiting for a deployment approval gives its build slot back, then queues for it again.
ACQUIRE_SLOT = ActivityContract(
    "acquire_build_slot", SlotRequest, SlotClaim, non_retryable=BOOKKEEPING_ERRORS
)
RELEASE_SLOT = ActivityContract(
    "release_build_slot", SlotRequest, bool, non_retryable=BOOKKEEPING_ERRORS
)
