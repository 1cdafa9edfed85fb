"""The verification phase of AgentTaskWorkflow: run the validated pipeline as a child
PipelineRunWorkflow on the task's commit; on a failure examine the run and, when the failure is
the pipeline's fault and a repair was made, rerun from the failed stage; until green or the
attempt budget is spent. Pure workflow code."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from forgeline.statuses.runs import FailureClass
    from workflows.agent_models import CheckoutResult
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


async def verify_pipeline(
    task_id: uuid.UUID,
    checkout: CheckoutResult,
    *,
    attempts: int,
    task_queue: str,
    heartbeat: timedelta,
    budget_left: Callable[[], bool],
    on_phase: Callable[[str], None],
) -> Verification:
    """Runs until green or the budget is spent; the verdict, honest either way."""
    verdict = Verification(verified=False)
    rerun_of: uuid.UUID | None = None
    for attempt in range(1, max(1, attempts) + 1):
        on_phase(f"verifying (run {attempt} of {attempts})")
        run = await PREPARE_VERIFICATION.execute(
            PrepareVerificationInput(
                task_id=task_id, checkout=checkout, attempt=attempt, rerun_of=rerun_of
            ),
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=heartbeat,
            retry_policy=FIRST_RUN_RETRY if attempt == 1 else VERIFY_RETRY,
        )
        verdict.runs.append(run.run_id)
        verdict.attempts = attempt
        # A failed run ends its workflow in error; the run's rows say how, the examination
        # reads them.
        with contextlib.suppress(ChildWorkflowError):
            await workflow.execute_child_workflow(
                PipelineRunWorkflow.run,
                PipelineRunInput(
                    run_id=str(run.run_id),
                    pipeline_id=str(run.pipeline_id),
                    project_id=str(run.project_id),
                    organization_id=str(run.organization_id) if run.organization_id else None,
                ),
                id=run.workflow_id,
                task_queue=task_queue,
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            )
        on_phase(f"examining run {attempt}")
        more = attempt < attempts and budget_left()
        exam = await EXAMINE_VERIFICATION_RUN.execute(
            ExamineRunInput(task_id=task_id, run_id=run.run_id, checkout=checkout, may_repair=more),
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=heartbeat,
            retry_policy=VERIFY_RETRY,
        )
        if exam.green:
            verdict.verified, verdict.run_id = True, run.run_id
            verdict.stop_reason = "green"
            return verdict
        verdict.run_id = run.run_id
        verdict.failed_stage, verdict.failure_class = exam.failed_stage, exam.failure_class
        verdict.diagnosis, verdict.evidence = exam.diagnosis, exam.evidence
        if not exam.repaired:
            verdict.stop_reason = _stop_reason(exam, more)
            return verdict
        verdict.repairs.append(exam.repair or "")
        rerun_of = run.run_id
    verdict.stop_reason = "attempt budget spent"
    return verdict
