"""PipelineRunWorkflow: checkout, then stages as a DAG (order + depends_on), conditions, retries.

Waits for one of its organization's build slots (claimed while preparing; a grant signal when it
has to queue) before it starts, releases it however it ends. Every stage attempt is a heartbeating
activity on a build host (the plan's build task queue), with the variables the control plane
resolved when the run started; cancelling the run cancels the activity, which kills the container
or process group before the run is marked `cancelled`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, RetryState
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from forgeline.statuses.runs import RunStatus, StageStatus
    from workflows import run_cancellation as cancellation
    from workflows.contracts.runs import (
        EXECUTE_STAGE,
        GIT_ERROR,
        PREPARE_RUN,
        RECORD_LOST_ATTEMPTS,
        RECORD_STAGE_SKIPPED,
        REUSE_STAGE,
        START_RUN,
    )
    from workflows.run_build_slot import BuildSlotHold
    from workflows.run_deploy_stage import deploy
    from workflows.run_policies import (
        BOOKKEEPING,
        BOOKKEEPING_TIMEOUT,
        CHECKOUT_TIMEOUT,
        INFRA_ATTEMPTS,
        STAGE_GRACE,
        final_stage_errors,
    )
    from workflows.runs_models import (
        GRANT_SIGNAL,
        RUN_NOT_FOUND_ERROR,
        STAGE_FAILED_ERROR,
        STAGE_TIMED_OUT_ERROR,
        CheckoutResult,
        DeployStageInput,
        FinishRunInput,
        LostAttemptsInput,
        PipelineRunInput,
        ReusableStage,
        ReuseStageInput,
        RunLimits,
        RunPlan,
        RunStarted,
        RunStatusView,
        RunVariables,
        SkipStageInput,
        SlotGrant,
        SlotRequest,
        StageInput,
        StageResult,
        StageSpec,
        build_slot_key,
    )
    from workflows.stage_scheduler import Reuse, Run, Skip, StageScheduler

# A stage still in these when its run is cancelled was cancelled with it.
ACTIVE_STAGE = (StageStatus.PENDING, StageStatus.RUNNING)

# Patch: the last stage's activity may close the run (histories from before keep the finish step).
FINISH_WITH_LAST_STAGE = "finish-with-last-stage"
# Patch: stages run on build hosts with the variables resolved at start (and never close the run:
# a build host does not write runs). Runs started before keep their stages on their own queue.
STAGES_ON_BUILD_HOSTS = "stages-on-build-hosts"
# Patch: a stage whose last attempt was lost (timed out) records the attempts without a row.
RECORD_LOST_ATTEMPTS_PATCH = "record-lost-attempts"


@workflow.defn(name="PipelineRunWorkflow")
class PipelineRunWorkflow:
    def __init__(self) -> None:
        self.run_id = ""
        self.status = RunStatus.QUEUED
        self.slot = BuildSlotHold()
        self.stage_status: dict[str, StageStatus] = {}
        # Why the run failed, stage by stage, for the run's `error` column.
        self.failures: list[str] = []
        # The last stage's activity closed the run (it succeeded): no finish_run step.
        self.finished_by_stage = False
        self.on_build_hosts = False
        # Resolved by the control plane when the run started; only in (encrypted) payloads.
        self.variables: RunVariables | None = None
        self.limits: RunLimits | None = None

    @workflow.signal(name=GRANT_SIGNAL)
    def grant(self, grant: SlotGrant) -> None:
        self.slot.granted(grant.seq)

    @workflow.query(name="status")
    def query_status(self) -> RunStatusView:
        return RunStatusView(
            run_id=self.run_id,
            status=self.status,
            queued_for_slot=self.slot.waiting,
            stages=dict(self.stage_status),
            running=[n for n, s in self.stage_status.items() if s == StageStatus.RUNNING],
        )

    @workflow.run
    async def run(self, inp: PipelineRunInput) -> RunStatusView:
        self.run_id = inp.run_id
        # Decided once per run: a run started before build hosts has no variables to hand them.
        self.on_build_hosts = workflow.patched(STAGES_ON_BUILD_HOSTS)
        info = workflow.info()
        error: str | None = None
        status = RunStatus.FAILED
        plan: RunPlan | None = None
        try:
            # Also asks for a build slot: the grant arrives as a signal, maybe before this returns.
            self.slot.waiting = True
            # Short DB-only bookkeeping runs as local activities: no server round trip (a
            # handful per run). Stages stay regular activities: many long local activities at
            # once starve workflow tasks.
            plan = await PREPARE_RUN.execute_local(
                inp,
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                retry_policy=BOOKKEEPING,
            )
            self.stage_status = {s.name: StageStatus.PENDING for s in plan.stages}
            if plan.slot_claim is not None:
                self.slot.claimed(plan.slot_claim, plan.slot_granted)
            await self.slot.wait()
            self.status = RunStatus.RUNNING
            started = RunStarted(
                run_id=inp.run_id,
                workflow_id=info.workflow_id,
                workflow_run_id=info.run_id,
                task_queue=info.task_queue,
                branch=plan.branch,
                commit_sha=plan.commit_sha,
                environment_ids=plan.deploy_environment_ids(),
            )
            checkout: CheckoutResult
            if plan.started:
                # Preparing found a free slot and nothing to clone: already marked started.
                checkout = CheckoutResult(
                    commit_sha=plan.commit_sha,
                    changed_paths=plan.changed_paths,
                    variables=plan.variables,
                    limits=plan.limits,
                )
            elif plan.has_repository:
                # A clone is long and heartbeats: a regular activity.
                checkout = await START_RUN.execute(
                    started,
                    start_to_close_timeout=CHECKOUT_TIMEOUT,
                    heartbeat_timeout=timedelta(seconds=60),
                    retry_policy=RetryPolicy(
                        maximum_attempts=3,
                        non_retryable_error_types=[RUN_NOT_FOUND_ERROR, GIT_ERROR],
                    ),
                )
            else:
                # Nothing to clone: marking the run started is one short transaction.
                checkout = await START_RUN.execute_local(
                    started,
                    start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                    retry_policy=BOOKKEEPING,
                )
            self.variables = checkout.variables
            # As the plan stood when the run started (a run queued before an upgrade gets it).
            self.limits = checkout.limits or plan.limits
            # The commit's own `.forgeline.yml`, when it has one, is what the run executes.
            plan, self.stage_status = checkout.applied_to(plan, self.stage_status)
            status = await self._run_stages(inp, plan, checkout)
        except (asyncio.CancelledError, ActivityError, ChildWorkflowError) as exc:
            if cancellation.run_cancelled(exc):
                await self._finish(inp, plan, RunStatus.CANCELLED, cancellation.BY_REQUEST)
                raise
            error, status = cancellation.failure_text(exc), RunStatus.FAILED
        if status == RunStatus.FAILED and error is None and self.failures:
            error = "; ".join(self.failures)[:2000]
        if self.finished_by_stage and status == RunStatus.SUCCESS:
            self.status = status
        else:
            await self._finish(inp, plan, status, error)
        return self.query_status()

    async def _finish(
        self,
        inp: PipelineRunInput,
        plan: RunPlan | None,
        status: RunStatus,
        error: str | None,
    ) -> None:
        self.status = status
        for name, stage_status in self.stage_status.items():
            if stage_status in ACTIVE_STAGE and status == RunStatus.CANCELLED:
                self.stage_status[name] = StageStatus.CANCELLED
        await cancellation.close_run(self._finish_input(inp, plan, status, error))

    def _finish_input(
        self, inp: PipelineRunInput, plan: RunPlan | None, status: RunStatus, error: str | None
    ) -> FinishRunInput:
        info = workflow.info()
        return FinishRunInput(
            run_id=inp.run_id,
            status=status,
            error=error,
            workflow_id=info.workflow_id,
            workflow_run_id=info.run_id,
            spec_hashes={s.name: s.spec_hash for s in plan.stages} if plan else {},
            # finish_run releases the build slot alongside its bookkeeping, even if that fails.
            slot_key=build_slot_key(inp.organization_id, inp.project_id),
            cancelled_stages=cancellation.cut_short(status, self.stage_status),
        )

    async def _run_stages(
        self, inp: PipelineRunInput, plan: RunPlan, checkout: CheckoutResult
    ) -> RunStatus:
        stages = StageScheduler(
            plan.stages,
            branch=plan.branch,
            changed_paths=checkout.changed_paths,
            reusable=plan.reusable,
        )
        self.failures = stages.failures
        running: dict[asyncio.Task[StageResult], str] = {}
        commit = checkout.commit_sha or plan.commit_sha
        try:
            while not stages.done:
                for step in stages.sweep():
                    name = step.stage.name
                    if isinstance(step, Skip):
                        result = await self._skip(inp, step.stage, step.reason)
                        stages.record(name, result.status, result.error)
                    elif isinstance(step, Reuse):
                        result = await self._reuse(inp, step.stage, step.reusable)
                        stages.record(name, result.status, result.error)
                    else:
                        running[self._start(inp, plan, step, commit)] = name
                if not running:
                    # Only if the stages' dependencies form a cycle: skip what is left, visibly.
                    for stage in stages.unreachable():
                        result = await self._skip(inp, stage, "dependency cycle")
                        stages.record_unreachable(stage.name, result.status)
                    break
                done, _ = await workflow.wait(list(running), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    name = running.pop(task)
                    result = stages.leg_result(name, task.result())
                    self.stage_status[name] = result.status
                    self.finished_by_stage = self.finished_by_stage or result.run_finished
                    stages.record(name, result.status, result.error)
                    for sibling in stages.fail_fast_cancels(name):  # matrix legs only
                        next(t for t, n in running.items() if n == sibling).cancel()
        except (asyncio.CancelledError, ActivityError) as exc:
            # Cancelled while waiting on its stages or on a skip's bookkeeping.
            if not cancellation.run_cancelled(exc):
                raise
            for task in running:
                task.cancel()
            # Wait until every activity confirmed the kill (WAIT_CANCELLATION_COMPLETED).
            await asyncio.gather(*running, return_exceptions=True)
            raise
        return stages.outcome

    def _start(
        self, inp: PipelineRunInput, plan: RunPlan, step: Run, commit: str | None
    ) -> asyncio.Task[StageResult]:
        self.stage_status[step.stage.name] = StageStatus.RUNNING
        # Its success is the run's: its activity may close the run itself.
        last = (
            step.decides_run
            and not self.on_build_hosts
            and workflow.patched(FINISH_WITH_LAST_STAGE)
        )
        finish = self._finish_input(inp, plan, RunStatus.SUCCESS, None) if last else None
        return asyncio.create_task(self._execute(inp, plan, step.stage, commit, finish))

    async def _skip(self, inp: PipelineRunInput, stage: StageSpec, reason: str) -> StageResult:
        self.stage_status[stage.name] = StageStatus.SKIPPED
        return await RECORD_STAGE_SKIPPED.execute_local(
            SkipStageInput(run_id=inp.run_id, stage=stage, reason=reason),
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING,
        )

    async def _reuse(
        self, inp: PipelineRunInput, stage: StageSpec, reused: ReusableStage
    ) -> StageResult:
        self.stage_status[stage.name] = StageStatus.SUCCESS
        return await REUSE_STAGE.execute_local(
            ReuseStageInput(run_id=inp.run_id, stage=stage, reused=reused),
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING,
        )

    async def _execute(
        self,
        inp: PipelineRunInput,
        plan: RunPlan,
        stage: StageSpec,
        commit: str | None,
        finish: FinishRunInput | None = None,
    ) -> StageResult:
        queue = workflow.info().task_queue
        variables = None
        if self.on_build_hosts:
            queue = plan.build_task_queue or queue
            if self.variables is not None:
                variables = self.variables.for_stage(stage.deploy_environment_id)
        max_attempts = stage.retry_count + 1 + INFRA_ATTEMPTS
        try:
            result = await EXECUTE_STAGE.execute(
                StageInput(
                    run_id=inp.run_id,
                    organization_id=plan.organization_id,
                    stage=stage,
                    branch=plan.branch,
                    commit_sha=commit,
                    run_number=plan.run_number,
                    finish=finish,
                    variables=variables,
                    limits=self.limits,
                ),
                task_queue=queue,
                start_to_close_timeout=timedelta(seconds=stage.timeout_seconds) + STAGE_GRACE,
                heartbeat_timeout=timedelta(seconds=inp.heartbeat_seconds * 3),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=stage.retry_initial_interval_seconds),
                    maximum_interval=timedelta(seconds=stage.retry_maximum_interval_seconds),
                    maximum_attempts=max_attempts,
                    non_retryable_error_types=final_stage_errors(stage.retry_count),
                ),
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except ActivityError as exc:
            cause = exc.cause
            if (
                not isinstance(cause, ApplicationError)
                and exc.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED
                and workflow.patched(RECORD_LOST_ATTEMPTS_PATCH)
            ):
                # The last attempt was lost too: record here the ones that never opened a row.
                await RECORD_LOST_ATTEMPTS.execute_local(
                    LostAttemptsInput(run_id=inp.run_id, stage=stage, attempts=max_attempts),
                    start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                    retry_policy=BOOKKEEPING,
                )
            status = StageStatus.FAILED
            exit_code: int | None = None
            if isinstance(cause, ApplicationError):
                if cause.type == STAGE_TIMED_OUT_ERROR:
                    status = StageStatus.TIMED_OUT
                if cause.type in (STAGE_FAILED_ERROR, STAGE_TIMED_OUT_ERROR) and cause.details:
                    detail = cause.details[0]
                    if isinstance(detail, dict):
                        exit_code = detail.get("exit_code")
            return StageResult(
                stage_name=stage.name,
                status=status,
                exit_code=exit_code,
                error=str(cause or exc),
            )
        if result.status == StageStatus.SUCCESS and stage.deploy_environment_id:
            deploy_error = await deploy(
                DeployStageInput(
                    run_id=inp.run_id,
                    organization_id=plan.organization_id,
                    project_id=plan.project_id,
                    environment_id=stage.deploy_environment_id,
                    commit_sha=commit,
                    branch=plan.branch,
                ),
                slot=self.slot,
                slot_request=self._slot_request(inp, plan),
                only_stage_running=lambda: self._only_running(stage.name),
            )
            if deploy_error is not None:
                # The stage's commands passed but its deployment did not: the stage failed.
                return StageResult(
                    stage_name=stage.name, status=StageStatus.FAILED, error=deploy_error
                )
        return result

    def _only_running(self, stage_name: str) -> bool:
        running = [n for n, st in self.stage_status.items() if st == StageStatus.RUNNING]
        return running == [stage_name]

    def _slot_request(self, inp: PipelineRunInput, plan: RunPlan) -> SlotRequest:
        return SlotRequest(
            organization_key=build_slot_key(inp.organization_id, inp.project_id),
            run_workflow_id=workflow.info().workflow_id,
            limit=plan.concurrent_builds,
        )
