"""Every activity of the agent domain: its registered name, input, output and the errors that
are never retried. The names are part of recorded histories and never change.

Pure: importable inside the workflow sandbox.
"""

from __future__ import annotations

from workflows.agent_models import (
    CheckoutInput,
    CheckoutResult,
    FinishInput,
    FinishOutput,
    LlmTurnInput,
    LlmTurnOutput,
    PlannerTurnInput,
    PlannerTurnOutput,
    StartExecutionInput,
    StartExecutionOutput,
    ToolActivityInput,
    ToolActivityOutput,
)
from workflows.contract import ActivityContract
from workflows.verification_models import (
    ExamineRunInput,
    PrepareVerificationInput,
    RunExamination,
    VerificationRun,
)

# The task row is gone: nothing left to work for.
TASK_GONE = ("TaskNotFound",)
# The repository cannot be fetched as configured; another attempt fetches nothing more.
REPOSITORY_REFUSED = (
    "RepositoryMissing",
    "RepositoryUnavailable",
    "RepositoryTooLarge",
    "UnsafeRepositoryUrl",
)

START_EXECUTION = ActivityContract(
    "agent.start_execution", StartExecutionInput, StartExecutionOutput, non_retryable=TASK_GONE
)
CHECKOUT_REPOSITORY = ActivityContract(
    "agent.checkout_repository",
    CheckoutInput,
    CheckoutResult,
    non_retryable=(*REPOSITORY_REFUSED, "RepositoryCredentials", *TASK_GONE),
)
PLANNER_TURN = ActivityContract(
    "agent.planner_turn", PlannerTurnInput, PlannerTurnOutput, non_retryable=TASK_GONE
)
LLM_TURN = ActivityContract(
    "agent.llm_turn",
    LlmTurnInput,
    LlmTurnOutput,
    non_retryable=("LlmRequestRejected", "LlmNotConfigured", "TranscriptMissing", *TASK_GONE),
)
RUN_TOOL = ActivityContract(
    "agent.run_tool",
    ToolActivityInput,
    ToolActivityOutput,
    non_retryable=(*REPOSITORY_REFUSED, *TASK_GONE),
)
FINISH_TASK = ActivityContract(
    "agent.finish_task", FinishInput, FinishOutput, non_retryable=TASK_GONE
)

# Verification of a generated pipeline (workflows/verification_models.py).
PREPARE_VERIFICATION = ActivityContract(
    "agent.prepare_verification",
    PrepareVerificationInput,
    VerificationRun,
    non_retryable=("VerificationRefused", *TASK_GONE),
)
EXAMINE_VERIFICATION_RUN = ActivityContract(
    "agent.examine_verification_run",
    ExamineRunInput,
    RunExamination,
    non_retryable=("VerificationRefused", *TASK_GONE),
)
