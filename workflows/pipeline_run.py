"""PipelineRunWorkflow: checkout, then stages as a DAG (order + depends_on), conditions, retries.

Waits for one of its organization's build slots (claimed while preparing; a grant signal when it
has to queue) before it starts, releases it however it ends. Every stage attempt is a heartbeating
activity on a build host (the plan's build task queue), with the variables the control plane
resolved when the run started; cancelling the run cancels the activity, which kills the container
or process group before the run is marked `cancelled`.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, RetryState
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from forgeline.settings import DEPLOYMENTS_TASK_QUEUE
    from workflows.runs_models import (
        ACQUIRE_SLOT,
        EXECUTE_STAGE,
        FINISH_RUN,
        GRANT_SIGNAL,
        PREPARE_PIPELINE_DEPLOYMENT,
        PREPARE_RUN,
        RECORD_LOST_ATTEMPTS,
        RECORD_STAGE_SKIPPED,
        RELEASE_SLOT,
        REUSE_STAGE,
        RUN_NOT_FOUND_ERROR,
        STAGE_FAILED_ERROR,
        STAGE_INVALID_ERROR,
        STAGE_TIMED_OUT_ERROR,
        START_RUN,
        CheckoutResult,
        DeployStageInput,
        FinishRunInput,
        LostAttemptsInput,
        PipelineRunInput,
        ReuseStageInput,
        RunPlan,
        RunStarted,
        RunStatus,
        RunStatusView,
        RunVariables,
        SkipStageInput,
        SlotClaim,
        SlotGrant,
        SlotRequest,
        StageInput,
        StageResult,
        StageSpec,
        StageStatus,
        build_slot_key,
    )

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

BROKEN_STATUSES = {"failed", "timed_out", "cancelled"}
# Patch: the last stage's activity may close the run (histories from before keep the finish step).
FINISH_WITH_LAST_STAGE = "finish-with-last-stage"
# Patch: stages run on build hosts with the variables resolved at start (and never close the run:
# a build host does not write runs). Runs started before keep their stages on their own queue.
STAGES_ON_BUILD_HOSTS = "stages-on-build-hosts"
# Patch: a stage whose last attempt was lost (timed out) records the attempts without a row.
RECORD_LOST_ATTEMPTS_PATCH = "record-lost-attempts"


def stage_dependencies(stages: list[StageSpec]) -> dict[str, set[str]]:
    """Explicit depends_on wins; otherwise a stage waits for every stage earlier in `order`."""
    names = {s.name for s in stages}
    deps: dict[str, set[str]] = {}
    for stage in stages:
        if stage.depends_on:
            deps[stage.name] = {d for d in stage.depends_on if d in names and d != stage.name}
        else:
            deps[stage.name] = {s.name for s in stages if s.position < stage.position}
    return deps


def _matches_any(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def skip_reason(
    stage: StageSpec,
    *,
    branch: str | None,
    changed_paths: list[str] | None,
    broken_deps: list[str],
) -> str | None:
    """Why a stage does not run, or None when it does."""
    cond = stage.conditions
    rule = cond.previous_stage_status
    if rule == "success" and broken_deps:
        return f"dependency failed: {', '.join(sorted(broken_deps))}"
    if rule == "failure" and not broken_deps:
        return "runs only when a previous stage failed"
    if cond.branches and not (branch and _matches_any(branch, cond.branches)):
        return f"branch {branch!r} does not match {cond.branches}"
    if (
        cond.paths
        and changed_paths is not None
        and not any(_matches_any(p, cond.paths) for p in changed_paths)
    ):
        return f"no changed path matches {cond.paths}"
    return None


@workflow.defn(name="PipelineRunWorkflow")
class PipelineRunWorkflow:
    def __init__(self) -> None:
        self.run_id = ""
        self.status: RunStatus = "queued"
        # The run's current build-slot claim and the claims granted (at once, or by signal): a
        # grant for an earlier claim (given back while awaiting an approval) is not for this one.
        self.slot_claim: int | None = None
        self.grants: set[int] = set()
        self.waiting_for_slot = False
        self.stage_status: dict[str, StageStatus] = {}
        # Why the run failed, stage by stage, for the run's `error` column.
        self.failures: list[str] = []
        # The last stage's activity closed the run (it succeeded): no finish_run step.
        self.finished_by_stage = False
        self.on_build_hosts = False
        # Resolved by the control plane when the run started; only in (encrypted) payloads.
        self.variables: RunVariables | None = None

    @workflow.signal(name=GRANT_SIGNAL)
    def grant(self, grant: SlotGrant) -> None:
        self.grants.add(grant.seq)

    def _claimed(self, seq: int, granted: bool) -> None:
        self.slot_claim = seq
        if granted:
            self.grants.add(seq)

    def _slot_held(self) -> bool:
        return self.slot_claim in self.grants

    @workflow.query(name="status")
    def query_status(self) -> RunStatusView:
        return RunStatusView(
            run_id=self.run_id,
            status=self.status,
            queued_for_slot=self.waiting_for_slot,
            stages=dict(self.stage_status),
            running=[n for n, s in self.stage_status.items() if s == "running"],
        )

    @workflow.run
    async def run(self, inp: PipelineRunInput) -> RunStatusView:
        self.run_id = inp.run_id
        # Decided once per run: a run started before build hosts has no variables to hand them.
        self.on_build_hosts = workflow.patched(STAGES_ON_BUILD_HOSTS)
        info = workflow.info()
        error: str | None = None
        status: RunStatus = "failed"
        plan: RunPlan | None = None
        try:
            # Also asks for a build slot: the grant arrives as a signal, maybe before this returns.
            self.waiting_for_slot = True
            # Short DB-only bookkeeping runs as local activities: no server round trip (a
            # handful per run; stages stay regular activities, see DESIGN on local activities).
            plan = await workflow.execute_local_activity(
                PREPARE_RUN,
                inp,
                result_type=RunPlan,
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                retry_policy=BOOKKEEPING,
            )
            self.stage_status = {s.name: "pending" for s in plan.stages}
            if plan.slot_claim is not None:
                self._claimed(plan.slot_claim, plan.slot_granted)
            await workflow.wait_condition(self._slot_held)
            self.waiting_for_slot = False
            self.status = "running"
            started = RunStarted(
                run_id=inp.run_id,
                workflow_id=info.workflow_id,
                workflow_run_id=info.run_id,
                task_queue=info.task_queue,
                branch=plan.branch,
                commit_sha=plan.commit_sha,
                environment_ids=sorted(
                    {s.deploy_environment_id for s in plan.stages if s.deploy_environment_id}
                ),
            )
            checkout: CheckoutResult
            if plan.started:
                # Preparing found a free slot and nothing to clone: already marked started.
                checkout = CheckoutResult(
                    commit_sha=plan.commit_sha,
                    changed_paths=plan.changed_paths,
                    variables=plan.variables,
                )
            elif plan.has_repository:
                # A clone is long and heartbeats: a regular activity.
                checkout = await workflow.execute_activity(
                    START_RUN,
                    started,
                    result_type=CheckoutResult,
                    start_to_close_timeout=CHECKOUT_TIMEOUT,
                    heartbeat_timeout=timedelta(seconds=60),
                    retry_policy=RetryPolicy(
                        maximum_attempts=3,
                        non_retryable_error_types=[RUN_NOT_FOUND_ERROR, "GitError"],
                    ),
                )
            else:
                # Nothing to clone: marking the run started is one short transaction.
                checkout = await workflow.execute_local_activity(
                    START_RUN,
                    started,
                    result_type=CheckoutResult,
                    start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                    retry_policy=BOOKKEEPING,
                )
            self.variables = checkout.variables
            status = await self._run_stages(inp, plan, checkout)
        except asyncio.CancelledError:
            status = "cancelled"
            await self._finish(inp, plan, status, "cancelled by request")
            raise
        except (ActivityError, ChildWorkflowError) as exc:
            error = str(exc.cause or exc)
            status = "failed"
        if status == "failed" and error is None and self.failures:
            error = "; ".join(self.failures)[:2000]
        if self.finished_by_stage and status == "success":
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
            if stage_status in ("pending", "running") and status == "cancelled":
                self.stage_status[name] = "cancelled"
        await workflow.execute_local_activity(
            FINISH_RUN,
            self._finish_input(inp, plan, status, error),
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING,
        )

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
        )

    async def _run_stages(
        self, inp: PipelineRunInput, plan: RunPlan, checkout: CheckoutResult
    ) -> RunStatus:
        specs = {s.name: s for s in plan.stages}
        deps = stage_dependencies(plan.stages)
        results: dict[str, StageResult] = {}
        broken: set[str] = set()  # failed (not allowed to) or skipped because of a failure
        failed_own: set[str] = set()
        running: dict[asyncio.Task[StageResult], str] = {}
        commit = checkout.commit_sha or plan.commit_sha
        try:
            while len(results) < len(specs):
                for name in sorted(specs, key=lambda n: (specs[n].position, n)):
                    if name in results or name in running.values():
                        continue
                    if not deps[name] <= results.keys():
                        continue
                    stage = specs[name]
                    reason = skip_reason(
                        stage,
                        branch=plan.branch,
                        changed_paths=checkout.changed_paths,
                        broken_deps=[d for d in deps[name] if d in broken],
                    )
                    if reason is not None:
                        if stage.conditions.previous_stage_status == "success" and (
                            deps[name] & broken
                        ):
                            broken.add(name)
                        results[name] = await self._skip(inp, stage, reason)
                        continue
                    reusable = plan.reusable.get(name)
                    if reusable is not None and reusable.spec_hash == stage.spec_hash:
                        results[name] = await self._reuse(inp, stage, reusable)
                        continue
                    self.stage_status[name] = "running"
                    # The last stage left, nothing failed so far, no deployment to follow: its
                    # success is the run's, so its activity may close the run itself.
                    last = (
                        not running
                        and not failed_own
                        and len(results) == len(specs) - 1
                        and not stage.deploy_environment_id
                        and not self.on_build_hosts
                        and workflow.patched(FINISH_WITH_LAST_STAGE)
                    )
                    finish = self._finish_input(inp, plan, "success", None) if last else None
                    task = asyncio.create_task(self._execute(inp, plan, stage, commit, finish))
                    running[task] = name
                if not running:
                    if len(results) < len(specs):
                        # Unreachable: a dependency cycle. Skip what is left, visibly.
                        for name in specs.keys() - results.keys():
                            results[name] = await self._skip(inp, specs[name], "dependency cycle")
                            broken.add(name)
                            failed_own.add(name)
                    break
                done, _ = await workflow.wait(list(running), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    name = running.pop(task)
                    result = task.result()
                    results[name] = result
                    self.stage_status[name] = result.status
                    self.finished_by_stage = self.finished_by_stage or result.run_finished
                    if result.status in BROKEN_STATUSES and not specs[name].allow_failure:
                        broken.add(name)
                        failed_own.add(name)
                        self.failures.append(
                            f"stage {name} {result.status}: {result.error or 'no detail'}"
                        )
        except asyncio.CancelledError:
            for task in running:
                task.cancel()
            # Wait until every activity confirmed the kill (WAIT_CANCELLATION_COMPLETED).
            await asyncio.gather(*running, return_exceptions=True)
            raise
        return "failed" if failed_own else "success"

    async def _skip(self, inp: PipelineRunInput, stage: StageSpec, reason: str) -> StageResult:
        self.stage_status[stage.name] = "skipped"
        result: StageResult = await workflow.execute_local_activity(
            RECORD_STAGE_SKIPPED,
            SkipStageInput(run_id=inp.run_id, stage=stage, reason=reason),
            result_type=StageResult,
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING,
        )
        return result

    async def _reuse(self, inp: PipelineRunInput, stage: StageSpec, reused: Any) -> StageResult:
        self.stage_status[stage.name] = "success"
        result: StageResult = await workflow.execute_local_activity(
            REUSE_STAGE,
            ReuseStageInput(run_id=inp.run_id, stage=stage, reused=reused),
            result_type=StageResult,
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING,
        )
        return result

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
            result: StageResult = await workflow.execute_activity(
                EXECUTE_STAGE,
                StageInput(
                    run_id=inp.run_id,
                    organization_id=plan.organization_id,
                    stage=stage,
                    branch=plan.branch,
                    commit_sha=commit,
                    run_number=plan.run_number,
                    finish=finish,
                    variables=variables,
                ),
                task_queue=queue,
                result_type=StageResult,
                start_to_close_timeout=timedelta(seconds=stage.timeout_seconds) + STAGE_GRACE,
                heartbeat_timeout=timedelta(seconds=inp.heartbeat_seconds * 3),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=stage.retry_initial_interval_seconds),
                    maximum_interval=timedelta(seconds=stage.retry_maximum_interval_seconds),
                    maximum_attempts=max_attempts,
                    non_retryable_error_types=[STAGE_TIMED_OUT_ERROR, STAGE_INVALID_ERROR],
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
                # The last attempt was lost too: no later attempt will record the ones that
                # never opened their row.
                await workflow.execute_local_activity(
                    RECORD_LOST_ATTEMPTS,
                    LostAttemptsInput(run_id=inp.run_id, stage=stage, attempts=max_attempts),
                    start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                    retry_policy=BOOKKEEPING,
                )
            status: StageStatus = "failed"
            exit_code: int | None = None
            if isinstance(cause, ApplicationError):
                if cause.type == STAGE_TIMED_OUT_ERROR:
                    status = "timed_out"
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
        if result.status == "success" and stage.deploy_environment_id:
            deploy_error = await self._deploy(inp, plan, stage, commit)
            if deploy_error is not None:
                # The stage's commands passed but its deployment did not: the stage failed.
                return StageResult(stage_name=stage.name, status="failed", error=deploy_error)
        return result

    def _only_running(self, stage_name: str) -> bool:
        return [n for n, st in self.stage_status.items() if st == "running"] == [stage_name]

    def _slot_request(self, inp: PipelineRunInput, plan: RunPlan) -> SlotRequest:
        return SlotRequest(
            organization_key=build_slot_key(inp.organization_id, inp.project_id),
            run_workflow_id=workflow.info().workflow_id,
            limit=plan.concurrent_builds,
        )

    async def _release_slot(self, inp: PipelineRunInput, plan: RunPlan) -> None:
        self.slot_claim = None
        await workflow.execute_local_activity(
            RELEASE_SLOT,
            self._slot_request(inp, plan),
            result_type=bool,
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING,
        )

    async def _reacquire_slot(self, inp: PipelineRunInput, plan: RunPlan) -> None:
        self.waiting_for_slot = True
        claim: SlotClaim = await workflow.execute_local_activity(
            ACQUIRE_SLOT,
            self._slot_request(inp, plan),
            result_type=SlotClaim,
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING,
        )
        self._claimed(claim.seq, claim.granted)
        await workflow.wait_condition(self._slot_held)
        self.waiting_for_slot = False

    async def _deploy(
        self, inp: PipelineRunInput, plan: RunPlan, stage: StageSpec, commit: str | None
    ) -> str | None:
        """Hook: a deploy stage with an environment starts DeploymentWorkflow as a child.

        The deployments domain owns `prepare_pipeline_deployment` (creates the deployments row,
        returns the DeploymentInput) on its task queue; its failure fails this stage's run.
        Returns why the deployment did not go live (failed, rolled back, rejected), else None.
        """
        deployment_input: dict[str, Any] = await workflow.execute_activity(
            PREPARE_PIPELINE_DEPLOYMENT,
            DeployStageInput(
                run_id=inp.run_id,
                organization_id=plan.organization_id,
                project_id=plan.project_id,
                environment_id=stage.deploy_environment_id or "",
                commit_sha=commit,
                branch=plan.branch,
            ),
            result_type=dict,
            task_queue=DEPLOYMENTS_TASK_QUEUE,
            start_to_close_timeout=BOOKKEEPING_TIMEOUT,
            retry_policy=BOOKKEEPING,
        )
        # A protected environment waits for a person, maybe for hours: unless another stage of
        # this run is building, the run gives its build slot back meanwhile and queues for one
        # again once the deployment has ended (GitLab's manual jobs hold no runner either).
        yield_slot = bool(deployment_input.get("protected")) and self._only_running(stage.name)
        if yield_slot:
            await self._release_slot(inp, plan)
        try:
            outcome: dict[str, Any] = await workflow.execute_child_workflow(
                "DeploymentWorkflow",
                deployment_input,
                id=f"deployment-{deployment_input['deployment_id']}",
                task_queue=DEPLOYMENTS_TASK_QUEUE,
                result_type=dict,
            )
        except ChildWorkflowError:
            if yield_slot:
                await self._reacquire_slot(inp, plan)
            raise
        if yield_slot:
            await self._reacquire_slot(inp, plan)
        if outcome.get("status") in ("active", "superseded"):
            return None
        return (
            f"deployment {outcome.get('deployment_id')} ended {outcome.get('status')}: "
            f"{outcome.get('reason') or 'no reason given'}"
        )
