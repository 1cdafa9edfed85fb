"""DeploymentWorkflow: approve → queue for the environment → build → release → verify health →
activate, or roll back automatically to the last healthy deployment."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    TypedSearchAttributes,
)
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from forgeline.search_attributes import (
        KIND_KEY,
        ORG_KEY,
        PROJECT_KEY,
        forgeline_search_attributes,
    )
    from workflows.deployment_lock import GRANTED_SIGNAL, SUPERSEDED_SIGNAL
    from workflows.deployment_models import (
        ActivationRequest,
        ApprovalDecision,
        ApprovalOutcome,
        BuildRequest,
        BuildResult,
        DecisionRecord,
        DeploymentInput,
        DeploymentProgress,
        DeploymentResult,
        DeploymentStatus,
        ExecutionRecord,
        HealthRequest,
        HealthVerdict,
        LockRequest,
        LogCollectRequest,
        LogCollectResult,
        MonitorInput,
        PreviousDeployment,
        PreviousLookup,
        ReleaseRequest,
        ReleaseResult,
        RetireRequest,
        RetireResult,
        RollbackRecord,
        StatusUpdate,
        UsageRequest,
        unprintable,
    )
    from workflows.deployment_monitor import DeploymentMonitorWorkflow

NON_RETRYABLE = ["BuildFailed", "ValidationFailed", "ProviderUnavailable", "NotFound", "Conflict"]
# Bounded: ~5 minutes of attempts rides out a database restart; a write that can never succeed
# (bad data) fails the deployment instead of retrying for ever.
PROJECTION_RETRY = RetryPolicy(
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=60,
    non_retryable_error_types=NON_RETRYABLE,
)
# Patch: approvals are counted per distinct person up to the deployment's required number (a
# history from before took the first decision as final).
APPROVAL_QUORUM = "approval-quorum"
# Patch: a deployment granted the environment after a newer one went live ends instead of
# replacing it (a worker crash had delayed it past the newer one).
NEWER_LIVE_WINS = "newer-live-wins"
# Bookkeeping writes take milliseconds: a lost worker's attempt is retried after this, not after a
# minute during which newer deployments overtake this one.
PROJECTION_TIMEOUT = timedelta(seconds=10)
RETIRE_TIMEOUT = timedelta(seconds=60)  # stops and removes containers
RELEASE_RETRY = RetryPolicy(
    maximum_attempts=5,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=NON_RETRYABLE,
)
BUILD_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=NON_RETRYABLE)


def deployment_workflow_id(deployment_id: str) -> str:
    return f"deployment-{deployment_id}"


def search_attributes(organization_id: str, project_id: str, kind: str) -> TypedSearchAttributes:
    return forgeline_search_attributes(kind, organization_id=organization_id, project_id=project_id)


class ApprovalRejected(Exception):
    pass


@workflow.defn(name="DeploymentWorkflow")
class DeploymentWorkflow:
    def __init__(self) -> None:
        self._status: DeploymentStatus = "pending"
        self._step = "starting"
        self._url: str | None = None
        self._decision: ApprovalDecision | None = None
        # Approval quorum: every accepted decision in arrival order (one per person) and how
        # many of them are recorded in Postgres.
        self._quorum = False
        self._decisions: list[ApprovalDecision] = []
        self._recorded = 0
        self._lock_granted = False
        self._superseded = False
        self._input: DeploymentInput | None = None

    # --- handlers ------------------------------------------------------------------------------

    @workflow.signal(name=GRANTED_SIGNAL)
    def lock_granted(self) -> None:
        self._lock_granted = True

    @workflow.signal(name=SUPERSEDED_SIGNAL)
    def lock_superseded(self) -> None:
        self._superseded = True

    @workflow.update
    async def decide(self, decision: ApprovalDecision) -> ApprovalOutcome:
        if not self._quorum:
            self._decision = decision
            await workflow.wait_condition(lambda: self._status != "awaiting_approval")
            return ApprovalOutcome(
                deployment_id=self._inp.deployment_id,
                approved=decision.approved,
                status=self._status,
            )
        people = [d.approver_user_id for d in self._decisions]
        if decision.approver_user_id not in people:
            # Two approvals by the same person at once: both pass the validator, one counts.
            self._decisions.append(decision)
            people.append(decision.approver_user_id)
        mine = people.index(decision.approver_user_id)
        await workflow.wait_condition(
            lambda: self._recorded > mine or self._status != "awaiting_approval"
        )
        return ApprovalOutcome(
            deployment_id=self._inp.deployment_id,
            approved=self._decisions[mine].approved,
            status=self._status,
            approved_by=[
                d.approver_user_id for d in self._decisions[: self._recorded] if d.approved
            ],
            required_approvals=self._required_approvals(),
        )

    @decide.validator
    def _validate_decision(self, decision: ApprovalDecision) -> None:
        inp = self._inp
        if self._quorum:
            if self._status != "awaiting_approval":
                raise ApplicationError(f"deployment is {self._status}, not awaiting approval")
            earlier = next(
                (d for d in self._decisions if d.approver_user_id == decision.approver_user_id),
                None,
            )
            if earlier is not None and earlier.approved != decision.approved:
                raise ApplicationError("this person has already decided on the deployment")
        elif self._status != "awaiting_approval" or self._decision is not None:
            raise ApplicationError(f"deployment is {self._status}, not awaiting approval")
        if unprintable(decision.reason):
            raise ApplicationError("the reason must not contain control characters")
        if inp.triggered_by_user_id and decision.approver_user_id == inp.triggered_by_user_id:
            raise ApplicationError("the member who triggered a deployment cannot approve it")
        if decision.approver_role not in inp.approver_roles:
            raise ApplicationError(
                f"role {decision.approver_role!r} cannot approve; needs one of {inp.approver_roles}"
            )

    def _required_approvals(self) -> int:
        return max(1, self._inp.required_approvals)

    @workflow.query
    def progress(self) -> DeploymentProgress:
        return DeploymentProgress(
            deployment_id=self._inp.deployment_id if self._input else "",
            status=self._status,
            step=self._step,
            url=self._url,
        )

    @property
    def _inp(self) -> DeploymentInput:
        assert self._input is not None
        return self._input

    # --- activity helpers ----------------------------------------------------------------------

    async def _set_status(self, status: DeploymentStatus, **fields: Any) -> None:
        self._status = status
        self._step = status
        await workflow.execute_activity(
            "deployment_record_status",
            StatusUpdate(deployment_id=self._inp.deployment_id, status=status, **fields),
            start_to_close_timeout=PROJECTION_TIMEOUT,
            retry_policy=PROJECTION_RETRY,
        )

    async def _projection(
        self,
        name: str,
        arg: Any,
        result_type: type | None = None,
        timeout: timedelta = PROJECTION_TIMEOUT,
    ) -> Any:
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=timeout,
            retry_policy=PROJECTION_RETRY,
        )

    # --- the run -------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: DeploymentInput) -> DeploymentResult:
        self._input = inp
        info = workflow.info()
        workflow.upsert_search_attributes(
            [
                ORG_KEY.value_set(inp.organization_id),
                PROJECT_KEY.value_set(inp.project_id),
                KIND_KEY.value_set("deployment"),
            ]
        )
        workflow.upsert_memo(
            {
                "environment": inp.environment_name or inp.environment_id,
                "provider": inp.provider,
                "version": inp.source.version,
                "commit_sha": inp.source.commit_sha or "",
            }
        )
        await self._projection("deployment_ensure_row", inp)
        await self._projection(
            "deployment_record_execution",
            ExecutionRecord(
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                workflow_type=info.workflow_type,
                organization_id=inp.organization_id,
                project_id=inp.project_id,
                subject_id=inp.deployment_id,
                task_queue=info.task_queue,
            ),
        )
        release: ReleaseResult | None = None
        holding_lock = False
        try:
            if inp.protected:
                await self._await_approval()
            await self._set_status("queued")
            await self._projection(
                "deployment_acquire_lock",
                LockRequest(
                    environment_id=inp.environment_id,
                    workflow_id=info.workflow_id,
                    deployment_id=inp.deployment_id,
                    preview=inp.preview,
                ),
            )
            holding_lock = True
            self._step = "waiting for the environment"
            await workflow.wait_condition(lambda: self._lock_granted or self._superseded)
            if self._superseded and not self._lock_granted:
                holding_lock = False
                return await self._finish("cancelled", "superseded by a newer preview deployment")
            if workflow.patched(NEWER_LIVE_WINS):
                newer: PreviousDeployment | None = await self._projection(
                    "deployment_newer_live",
                    PreviousLookup(
                        environment_id=inp.environment_id, exclude_deployment_id=inp.deployment_id
                    ),
                    PreviousDeployment,
                )
                if newer is not None:
                    return await self._finish(
                        "cancelled",
                        f"deployment {newer.deployment_id}, requested later, is already live",
                    )

            artifact = await self._build()
            await self._set_status(
                "deploying", image=artifact.image, artifact=self._artifact(artifact)
            )
            release = await workflow.execute_activity(
                "deployment_release",
                ReleaseRequest(
                    deployment_id=inp.deployment_id,
                    organization_id=inp.organization_id,
                    project_id=inp.project_id,
                    environment_id=inp.environment_id,
                    environment_type=inp.environment_type,
                    provider=inp.provider,
                    image=artifact.image,
                    static_prefix=artifact.static_prefix,
                    config=inp.config,
                ),
                result_type=ReleaseResult,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RELEASE_RETRY,
            )
            self._url = release.url
            await self._set_status("verifying", url=release.url)
            verdict = await self._verify(release, artifact)
            await self._collect_logs(release)
            if verdict.healthy:
                return await self._activate(release, artifact, verdict)
            return await self._roll_back(release, verdict)
        except ApprovalRejected as exc:
            return await self._finish("rejected", str(exc))
        except (ActivityError, ChildWorkflowError) as exc:
            reason = _failure_message(exc)
            if release is not None:
                await self._drop_release()
            return await self._finish("failed", reason)
        except asyncio.CancelledError:
            # Compensation: a cancelled deployment leaves nothing serving of its own.
            if release is not None:
                await self._drop_release()
            await self._finish("cancelled", "deployment cancelled")
            raise
        finally:
            if holding_lock:
                await self._release_lock()

    async def _await_approval(self) -> None:
        inp = self._inp
        # Decided before the status opens the gate: every decision then takes the same path.
        self._quorum = workflow.patched(APPROVAL_QUORUM)
        await self._set_status("awaiting_approval")
        self._step = "awaiting approval"
        if self._quorum:
            await self._await_quorum()
            return
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None,
                timeout=timedelta(seconds=inp.approval_timeout_seconds),
            )
        except TimeoutError:
            self._status = "rejected"
            raise ApprovalRejected(
                f"approval timed out after {inp.approval_timeout_seconds:.0f} seconds"
            ) from None
        assert self._decision is not None
        await self._projection(
            "deployment_record_decision",
            DecisionRecord(deployment_id=inp.deployment_id, decision=self._decision),
        )
        if not self._decision.approved:
            self._status = "rejected"
            raise ApprovalRejected(f"rejected: {self._decision.reason}")
        self._status = "pending"

    async def _await_quorum(self) -> None:
        """Wait for the required number of distinct approvers (a rejection ends the wait)."""
        inp = self._inp
        required = self._required_approvals()
        deadline = workflow.now() + timedelta(seconds=inp.approval_timeout_seconds)
        while True:
            remaining = (deadline - workflow.now()).total_seconds()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await workflow.wait_condition(
                    lambda: len(self._decisions) > self._recorded,
                    timeout=timedelta(seconds=remaining),
                )
            except TimeoutError:
                self._status = "rejected"
                raise ApprovalRejected(
                    f"approval timed out after {inp.approval_timeout_seconds:.0f} seconds "
                    f"({self._approvals()} of {required} approvals)"
                ) from None
            # Every decision that arrived, also while recording, is recorded before the verdict
            # (one row per person): people approving at once all count.
            pending = self._recorded
            while pending < len(self._decisions):
                await self._projection(
                    "deployment_record_decision",
                    DecisionRecord(
                        deployment_id=inp.deployment_id, decision=self._decisions[pending]
                    ),
                )
                pending += 1
            rejection = next((d for d in self._decisions[:pending] if not d.approved), None)
            if rejection is not None:
                self._status = "rejected"
                self._recorded = pending
                raise ApprovalRejected(f"rejected: {rejection.reason}")
            if self._approvals(pending) >= required:
                self._status = "pending"
            self._recorded = pending
            if self._status == "pending":
                return

    def _approvals(self, upto: int | None = None) -> int:
        decisions = self._decisions[: self._recorded if upto is None else upto]
        return len({d.approver_user_id for d in decisions if d.approved})

    async def _build(self) -> BuildResult:
        inp = self._inp
        if inp.source.image or inp.source.static_prefix:
            # Rollback and promotion reuse the exact artifact: no rebuild.
            return BuildResult(image=inp.source.image, static_prefix=inp.source.static_prefix)
        await self._set_status("building")
        result: BuildResult = await workflow.execute_activity(
            "deployment_build",
            BuildRequest(
                deployment_id=inp.deployment_id,
                project_id=inp.project_id,
                provider=inp.provider,
                source=inp.source,
            ),
            result_type=BuildResult,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=BUILD_RETRY,
        )
        return result

    async def _verify(self, release: ReleaseResult, artifact: BuildResult) -> HealthVerdict:
        inp = self._inp
        policy = inp.config.health
        verdict: HealthVerdict = await workflow.execute_activity(
            "deployment_verify_health",
            HealthRequest(
                deployment_id=inp.deployment_id,
                provider=inp.provider,
                url=release.url,
                container_name=release.container_name,
                static_prefix=artifact.static_prefix,
                bucket_name=release.resources[0]
                if inp.provider == "aws" and release.resources
                else None,
                region=inp.config.region,
                policy=policy,
            ),
            result_type=HealthVerdict,
            start_to_close_timeout=timedelta(seconds=policy.window_seconds + 120),
            heartbeat_timeout=timedelta(seconds=max(5.0, policy.request_timeout_seconds * 3)),
            retry_policy=RELEASE_RETRY,
        )
        return verdict

    async def _collect_logs(self, release: ReleaseResult) -> None:
        if release.container_name is None:
            return
        try:
            await workflow.execute_activity(
                "deployment_collect_logs",
                LogCollectRequest(
                    deployment_id=self._inp.deployment_id, container_name=release.container_name
                ),
                result_type=LogCollectResult,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(
                    maximum_attempts=3, non_retryable_error_types=NON_RETRYABLE
                ),
            )
        except ActivityError:
            workflow.logger.warning("runtime logs of %s not collected", self._inp.deployment_id)

    async def _activate(
        self, release: ReleaseResult, artifact: BuildResult, verdict: HealthVerdict
    ) -> DeploymentResult:
        inp = self._inp
        from_summary = _summary(verdict)
        # Zero-downtime swap: what served before is removed only now that the new one is healthy.
        await self._projection(
            "deployment_retire",
            RetireRequest(
                environment_id=inp.environment_id,
                provider=inp.provider,
                keep_deployment_id=inp.deployment_id,
            ),
            RetireResult,
            RETIRE_TIMEOUT,
        )
        await self._projection(
            "deployment_activate",
            ActivationRequest(
                deployment_id=inp.deployment_id,
                environment_id=inp.environment_id,
                organization_id=inp.organization_id,
                url=release.url,
                image=artifact.image,
                health_summary=from_summary,
                rollback_of_deployment_id=inp.rollback_of_deployment_id,
            ),
        )
        self._status = "active"
        self._step = "active"
        await self._projection(
            "deployment_record_usage",
            UsageRequest(
                deployment_id=inp.deployment_id,
                organization_id=inp.organization_id,
                project_id=inp.project_id,
            ),
        )
        if inp.start_monitor:
            await workflow.start_child_workflow(
                DeploymentMonitorWorkflow.run,
                MonitorInput(
                    deployment_id=inp.deployment_id,
                    environment_id=inp.environment_id,
                    organization_id=inp.organization_id,
                    provider=inp.provider,
                    url=release.url,
                    container_name=release.container_name,
                    static_prefix=artifact.static_prefix,
                    bucket_name=release.resources[0]
                    if inp.provider == "aws" and release.resources
                    else None,
                    region=inp.config.region,
                    policy=inp.config.health,
                    interval_seconds=inp.monitor_interval_seconds,
                ),
                id=f"deployment-monitor-{inp.deployment_id}",
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=search_attributes(
                    inp.organization_id, inp.project_id, "deployment_monitor"
                ),
            )
        return DeploymentResult(
            deployment_id=inp.deployment_id, status="active", url=release.url, image=artifact.image
        )

    async def _roll_back(self, release: ReleaseResult, verdict: HealthVerdict) -> DeploymentResult:
        inp = self._inp
        self._step = "rolling back"
        previous: PreviousDeployment | None = await self._projection(
            "deployment_previous_healthy",
            PreviousLookup(
                environment_id=inp.environment_id, exclude_deployment_id=inp.deployment_id
            ),
            PreviousDeployment,
        )
        await self._drop_release()
        if previous is not None:
            # Normally still serving (never removed before a healthy swap); restart it if not.
            await workflow.execute_activity(
                "deployment_restore_previous",
                previous,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RELEASE_RETRY,
            )
        reason = verdict.reason or "health checks failed"
        await self._projection(
            "deployment_record_rollback",
            RollbackRecord(
                deployment_id=inp.deployment_id,
                reason=reason,
                previous=previous,
                health_summary=_summary(verdict),
            ),
        )
        status: DeploymentStatus = "rolled_back" if previous is not None else "failed"
        self._status = status
        self._step = status
        return DeploymentResult(
            deployment_id=inp.deployment_id,
            status=status,
            url=previous.url if previous else None,
            reason=reason,
            rolled_back_to_deployment_id=previous.deployment_id if previous else None,
        )

    async def _drop_release(self) -> None:
        inp = self._inp
        await self._projection(
            "deployment_retire",
            RetireRequest(
                environment_id=inp.environment_id,
                provider=inp.provider,
                drop_deployment_id=inp.deployment_id,
            ),
            RetireResult,
            RETIRE_TIMEOUT,
        )

    async def _release_lock(self) -> None:
        handle = workflow.get_external_workflow_handle(
            f"environment-lock-{self._inp.environment_id}"
        )
        try:
            await handle.signal("release", workflow.info().workflow_id)
        except Exception:
            workflow.logger.warning("lock of %s already gone", self._inp.environment_id)

    async def _finish(self, status: DeploymentStatus, reason: str) -> DeploymentResult:
        await self._set_status(status, reason=reason[:2000])
        return DeploymentResult(deployment_id=self._inp.deployment_id, status=status, reason=reason)

    @staticmethod
    def _artifact(artifact: BuildResult) -> dict[str, str]:
        out: dict[str, str] = {}
        if artifact.image:
            out["image"] = artifact.image
        if artifact.static_prefix:
            out["static_prefix"] = artifact.static_prefix
        return out


def _summary(verdict: HealthVerdict) -> dict[str, object]:
    return {
        "status": "healthy" if verdict.healthy else "unhealthy",
        "last_check_at": verdict.checked_at.isoformat() if verdict.checked_at else None,
        "response_time_ms": verdict.last_latency_ms,
        "http_status": verdict.last_status,
        "checks_run": verdict.checks,
        "consecutive_passes": verdict.consecutive_passes,
        "failures": verdict.failures,
        "reason": verdict.reason,
        "checks": [{"name": "http_status", "passed": verdict.healthy}],
    }


def _failure_message(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    return str(cause or exc)[:2000]
