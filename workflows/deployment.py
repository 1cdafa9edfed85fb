"""DeploymentWorkflow: approve → queue for the environment → build → release → verify health →
activate, or roll back automatically to the last healthy deployment."""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from forgeline.search_attributes import (
        KIND_KEY,
        ORG_KEY,
        PROJECT_KEY,
        forgeline_search_attributes,
    )
    from workflows import deployment_steps as steps
    from workflows.contracts.deployments import (
        ACQUIRE_LOCK,
        ACTIVATE,
        ENSURE_ROW,
        NEWER_LIVE,
        PREVIOUS_HEALTHY,
        RECORD_EXECUTION,
        RECORD_ROLLBACK,
        RECORD_USAGE,
    )
    from workflows.deployment_approval import (
        ApprovalRejected,
        DeploymentApprovalGate,
        record,
    )
    from workflows.deployment_lock import (
        GRANTED_SIGNAL,
        SUPERSEDED_SIGNAL,
        EnvironmentDeploymentLock,
        lock_workflow_id,
    )
    from workflows.deployment_models import (
        ActivationRequest,
        BuildResult,
        DeploymentInput,
        DeploymentProgress,
        DeploymentResult,
        DeploymentStatus,
        ExecutionRecord,
        HealthVerdict,
        LockRequest,
        MonitorInput,
        PreviousLookup,
        ReleaseResult,
        RetireRequest,
        RollbackRecord,
        UsageRequest,
    )
    from workflows.deployment_monitor import DeploymentMonitorWorkflow

# Patch: a deployment granted the environment after a newer one went live ends instead of
# replacing it (a worker crash had delayed it past the newer one).
NEWER_LIVE_WINS = "newer-live-wins"


def deployment_workflow_id(deployment_id: str) -> str:
    return f"deployment-{deployment_id}"


def search_attributes(organization_id: str, project_id: str, kind: str) -> TypedSearchAttributes:
    return forgeline_search_attributes(kind, organization_id=organization_id, project_id=project_id)


@workflow.defn(name="DeploymentWorkflow")
class DeploymentWorkflow(DeploymentApprovalGate):
    def __init__(self) -> None:
        super().__init__()
        self._url: str | None = None
        self._lock_granted = False
        self._superseded = False

    # --- handlers ------------------------------------------------------------------------------

    @workflow.signal(name=GRANTED_SIGNAL)
    def lock_granted(self) -> None:
        self._lock_granted = True

    @workflow.signal(name=SUPERSEDED_SIGNAL)
    def lock_superseded(self) -> None:
        self._superseded = True

    @workflow.query
    def progress(self) -> DeploymentProgress:
        return DeploymentProgress(
            deployment_id=self._inp.deployment_id if self._input else "",
            status=self._status,
            step=self._step,
            url=self._url,
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
        await record(ENSURE_ROW, inp)
        await record(
            RECORD_EXECUTION,
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
            await self._set_status(DeploymentStatus.QUEUED)
            await record(
                ACQUIRE_LOCK,
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
                return await self._finish(
                    DeploymentStatus.CANCELLED, "superseded by a newer preview deployment"
                )
            if workflow.patched(NEWER_LIVE_WINS):
                newer = await record(
                    NEWER_LIVE,
                    PreviousLookup(
                        environment_id=inp.environment_id, exclude_deployment_id=inp.deployment_id
                    ),
                )
                if newer is not None:
                    return await self._finish(
                        DeploymentStatus.CANCELLED,
                        f"deployment {newer.deployment_id}, requested later, is already live",
                    )

            artifact = await self._build()
            await self._set_status(
                DeploymentStatus.DEPLOYING,
                image=artifact.image,
                artifact=steps.artifact_refs(artifact),
            )
            release = await steps.release(inp, artifact)
            self._url = release.url
            await self._set_status(DeploymentStatus.VERIFYING, url=release.url)
            verdict = await steps.verify(inp, release, artifact)
            await steps.collect_logs(inp, release)
            if verdict.healthy:
                return await self._activate(release, artifact, verdict)
            return await self._roll_back(verdict)
        except ApprovalRejected as exc:
            return await self._finish(DeploymentStatus.REJECTED, str(exc))
        except (ActivityError, ChildWorkflowError) as exc:
            reason = steps.failure_message(exc)
            if release is not None:
                await self._drop_release()
            return await self._finish(DeploymentStatus.FAILED, reason)
        except asyncio.CancelledError:
            # Compensation: a cancelled deployment leaves nothing serving of its own.
            if release is not None:
                await self._drop_release()
            await self._finish(DeploymentStatus.CANCELLED, "deployment cancelled")
            raise
        finally:
            if holding_lock:
                await self._release_lock()

    async def _build(self) -> BuildResult:
        inp = self._inp
        if inp.source.image or inp.source.static_prefix:
            # Rollback and promotion reuse the exact artifact: no rebuild.
            return BuildResult(image=inp.source.image, static_prefix=inp.source.static_prefix)
        await self._set_status(DeploymentStatus.BUILDING)
        return await steps.build(inp)

    async def _activate(
        self, release: ReleaseResult, artifact: BuildResult, verdict: HealthVerdict
    ) -> DeploymentResult:
        inp = self._inp
        # Zero-downtime swap: what served before is removed only now that the new one is healthy.
        await steps.retire(
            RetireRequest(
                environment_id=inp.environment_id,
                provider=inp.provider,
                keep_deployment_id=inp.deployment_id,
            )
        )
        await record(
            ACTIVATE,
            ActivationRequest(
                deployment_id=inp.deployment_id,
                environment_id=inp.environment_id,
                organization_id=inp.organization_id,
                url=release.url,
                image=artifact.image,
                health_summary=steps.health_summary(verdict),
                rollback_of_deployment_id=inp.rollback_of_deployment_id,
            ),
        )
        self._status = DeploymentStatus.ACTIVE
        self._step = DeploymentStatus.ACTIVE
        await record(
            RECORD_USAGE,
            UsageRequest(
                deployment_id=inp.deployment_id,
                organization_id=inp.organization_id,
                project_id=inp.project_id,
            ),
        )
        if inp.start_monitor:
            health = steps.health_request(inp, release, artifact)
            await workflow.start_child_workflow(
                DeploymentMonitorWorkflow.run,
                MonitorInput(
                    deployment_id=inp.deployment_id,
                    environment_id=inp.environment_id,
                    organization_id=inp.organization_id,
                    interval_seconds=inp.monitor_interval_seconds,
                    **health.probe_target(),
                ),
                id=f"deployment-monitor-{inp.deployment_id}",
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=search_attributes(
                    inp.organization_id, inp.project_id, "deployment_monitor"
                ),
            )
        return DeploymentResult(
            deployment_id=inp.deployment_id,
            status=DeploymentStatus.ACTIVE,
            url=release.url,
            image=artifact.image,
        )

    async def _roll_back(self, verdict: HealthVerdict) -> DeploymentResult:
        inp = self._inp
        self._step = "rolling back"
        previous = await record(
            PREVIOUS_HEALTHY,
            PreviousLookup(
                environment_id=inp.environment_id, exclude_deployment_id=inp.deployment_id
            ),
        )
        await self._drop_release()
        if previous is not None:
            # Normally still serving (never removed before a healthy swap); restart it if not.
            await steps.restore_previous(previous)
        reason = verdict.reason or "health checks failed"
        await record(
            RECORD_ROLLBACK,
            RollbackRecord(
                deployment_id=inp.deployment_id,
                reason=reason,
                previous=previous,
                health_summary=steps.health_summary(verdict),
            ),
        )
        status = DeploymentStatus.ROLLED_BACK if previous is not None else DeploymentStatus.FAILED
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
        await steps.retire(
            RetireRequest(
                environment_id=inp.environment_id,
                provider=inp.provider,
                drop_deployment_id=inp.deployment_id,
            )
        )

    async def _release_lock(self) -> None:
        handle = workflow.get_external_workflow_handle_for(
            EnvironmentDeploymentLock.run, lock_workflow_id(self._inp.environment_id)
        )
        try:
            await handle.signal(EnvironmentDeploymentLock.release, workflow.info().workflow_id)
        except Exception:
            workflow.logger.warning("lock of %s already gone", self._inp.environment_id)

    async def _finish(self, status: DeploymentStatus, reason: str) -> DeploymentResult:
        await self._set_status(status, reason=reason[:2000])
        return DeploymentResult(deployment_id=self._inp.deployment_id, status=status, reason=reason)
