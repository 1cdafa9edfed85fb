"""The verification phase of AgentTaskWorkflow: run the validated pipeline as a child
PipelineRunWorkflow on the task's commit; on a failure examine the run and, when the failure is
the pipeline's fault and a repair was made, rerun from the failed stage; until green or the
attempt budget is spent. Pure workflow code."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import CancelledError, ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from forgeline.statuses.runs import FailureClass, RunStatus
    from workflows.agent_models import (
        AgentTaskState,
        CheckoutResult,
        ToolActivityOutput,
        ToolCall,
    )
    from workflows.contracts.agent import EXAMINE_VERIFICATION_RUN, PREPARE_VERIFICATION
    from workflows.pipeline_run import PipelineRunWorkflow
    from workflows.runs_models import PipelineRunInput
    from workflows.verification_models import (
        ExamineRunInput,
        PrepareVerificationInput,
        RunExamination,
        Verification,
    )

VERIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=10,
)
# The first run also waits (as retries) for an earlier verification of the project to end.
FIRST_RUN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=400,
)


def _stop_reason(exam: RunExamination, attempts_left: bool) -> str:
    if exam.repairable and not attempts_left:
        return "attempt budget spent"
    if exam.failure_class == FailureClass.CODE:
        return "the repository's own build or tests fail"
    if exam.failed_stage is None:
        return "the run failed before any stage"
    return "no known repair for this failure"


@dataclass
class VerificationContext:
    task_id: uuid.UUID
    checkout: CheckoutResult
    attempts: int
    task_queue: str
    heartbeat: timedelta


async def run_once(
    ctx: VerificationContext,
    attempt: int,
    rerun_of: uuid.UUID | None,
    *,
    may_repair: bool,
) -> RunExamination:
    """One verification run (a rerun from `rerun_of`'s failed stage when given), examined."""
    run = await PREPARE_VERIFICATION.execute(
        PrepareVerificationInput(
            task_id=ctx.task_id, checkout=ctx.checkout, attempt=attempt, rerun_of=rerun_of
        ),
        start_to_close_timeout=timedelta(minutes=5),
        heartbeat_timeout=ctx.heartbeat,
        retry_policy=FIRST_RUN_RETRY if attempt == 1 else VERIFY_RETRY,
    )
    try:
        view = await workflow.execute_child_workflow(
            PipelineRunWorkflow.run,
            PipelineRunInput(
                run_id=str(run.run_id),
                pipeline_id=str(run.pipeline_id),
                project_id=str(run.project_id),
                organization_id=str(run.organization_id) if run.organization_id else None,
            ),
            id=run.workflow_id,
            task_queue=ctx.task_queue,
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        )
    except ChildWorkflowError as err:
        # A failed run ends its workflow in error: its rows say how, the examination reads
        # them. A cancelled one ends the verification (below).
        cancelled = isinstance(err.cause, CancelledError)
    else:
        cancelled = view.status == RunStatus.CANCELLED
    # The child is waited for until it has stopped, which swallows the task's own cancellation:
    # asked again here. Someone cancelling the run ends the verification as cancelled too.
    if cancelled or workflow.cancellation_reason() is not None:
        raise asyncio.CancelledError("the verification was cancelled")
    return await EXAMINE_VERIFICATION_RUN.execute(
        ExamineRunInput(
            task_id=ctx.task_id, run_id=run.run_id, checkout=ctx.checkout, may_repair=may_repair
        ),
        start_to_close_timeout=timedelta(minutes=5),
        heartbeat_timeout=ctx.heartbeat,
        retry_policy=VERIFY_RETRY,
    )


def record(verdict: Verification, exam: RunExamination) -> None:
    """A run's examination into the verdict (the last run speaks for the pipeline)."""
    verdict.runs.append(exam.run_id)
    verdict.attempts = len(verdict.runs)
    verdict.run_id = exam.run_id
    verdict.verified = exam.green
    verdict.failed_stage, verdict.failure_class = exam.failed_stage, exam.failure_class
    verdict.diagnosis, verdict.evidence = exam.diagnosis, exam.evidence
    if exam.repaired:
        verdict.repairs.append(exam.repair or "")


async def verify_pipeline(
    ctx: VerificationContext,
    verdict: Verification,
    *,
    changed: bool,
    budget_left: Callable[[], bool],
    on_phase: Callable[[str], None],
) -> Verification:
    """Runs (after those already in `verdict`, made by the model) until green or the budget is
    spent; `changed`: the pipeline changed since the last of them. Honest either way."""
    if verdict.runs and verdict.verified and not changed:
        verdict.stop_reason = "green"
        return verdict
    while True:
        attempt = len(verdict.runs) + 1
        if attempt > ctx.attempts:
            verdict.verified = False
            verdict.stop_reason = "attempt budget spent"
            return verdict
        rerun_of = verdict.runs[-1] if verdict.runs else None
        on_phase(f"verifying (run {attempt} of {ctx.attempts})")
        more = attempt < ctx.attempts and budget_left()
        exam = await run_once(ctx, attempt, rerun_of, may_repair=more)
        on_phase(f"examined run {attempt}")
        record(verdict, exam)
        if exam.green:
            verdict.stop_reason = "green"
            return verdict
        if not exam.repaired:
            verdict.stop_reason = _stop_reason(exam, more)
            return verdict


async def run_pipeline_tool(
    ctx: VerificationContext,
    state: AgentTaskState,
    call: ToolCall,
    on_phase: Callable[[str], None],
) -> ToolActivityOutput:
    """The model's run_pipeline: a verification run as a child workflow, examined (the model
    repairs with patch_stage; nothing is repaired for it), recorded in the task's state."""
    verdict = Verification.model_validate(state.verification or {"verified": False})
    attempt = len(verdict.runs) + 1

    def refused(reason: str) -> ToolActivityOutput:
        return ToolActivityOutput(
            call_id=call.call_id, name=call.name, ok=False, content=f"error: {reason}"
        )

    if not state.validated:
        return refused("validate_pipeline must pass before run_pipeline")
    if attempt > ctx.attempts:
        return refused(f"the {ctx.attempts} verification runs are spent")
    on_phase(f"verifying (run {attempt} of {ctx.attempts})")
    rerun_of = verdict.runs[-1] if verdict.runs else None
    exam = await run_once(ctx, attempt, rerun_of, may_repair=False)
    record(verdict, exam)
    state.verification = verdict.model_dump(mode="json")
    state.patched_since_run = False
    on_phase("tools")
    return ToolActivityOutput(
        call_id=call.call_id,
        name=call.name,
        ok=True,
        content=exam.model_dump_json(exclude={"repaired", "repair"}),
        data={"green": exam.green, "run_id": str(exam.run_id)},
    )
