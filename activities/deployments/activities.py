"""The DeploymentWorkflow's activities, as Temporal adapters: each unpacks its contract's input,
calls the release provider the deployment names (core/deployments/providers) or the read model
(core/deployments), heartbeats, and maps refusals to non-retryable errors.

Every side effect is keyed by the deployment ID (container name, object keys, bucket, row IDs),
so a retried activity — or one retried after a worker crash — finds what its predecessor did.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import docker
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError

from core.billing.metering import record_usage as record_usage_row
from core.deployments import pr_previews, projections, release_records, repository
from core.deployments.builds import BuildLog, build_context
from core.deployments.providers import releases_image
from core.deployments.providers.base import ReleaseContext, ReleaseNotServing, ReleaseProvider
from core.deployments.providers.registry import ReleaseProviders
from core.deployments.verification import check_health, monitor_summary
from core.integrations import pr_reports
from db.session import session_scope
from forgeline.errors import DomainError
from forgeline.settings import Settings
from forgeline.statuses.deployments import DeploymentStatus
from infra.deploy_containers import DockerReleaser, container_name
from infra.image_builds import BuildFailed
from infra.proxy_routes import CaddyRoutes, ProxyUnavailable, RouteTable
from infra.sites import SitePublishRefused
from infra.storage import ObjectStore
from workflows.contracts import deployments as contracts
from workflows.deployment_lock import EnvironmentDeploymentLock, LockState, lock_workflow_id
from workflows.deployment_models import (
    ActivationRequest,
    BuildRequest,
    BuildResult,
    DecisionRecord,
    DeploymentInput,
    ExecutionRecord,
    HealthRequest,
    HealthVerdict,
    LockRequest,
    LogCollectRequest,
    LogCollectResult,
    MonitorProbe,
    PreviousDeployment,
    PreviousLookup,
    ReleaseRequest,
    ReleaseResult,
    RetireRequest,
    RetireResult,
    RollbackRecord,
    StatusUpdate,
    StillActive,
    TeardownRequest,
    UsageRequest,
)

# Seconds a replaced container keeps serving after its route moved (requests already in flight).
DRAIN_SECONDS = 2.0
# Refusals no retry can change: a bad artifact, bad input, a provider this worker lacks.
REFUSED = (BuildFailed, DomainError, FileNotFoundError, SitePublishRefused)


def _non_retryable(exc: Exception) -> ApplicationError:
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)


@contextlib.asynccontextmanager
async def _refusals(*refused: type[Exception]) -> AsyncIterator[None]:
    """A refusal ends the activity for good; a proxy that does not answer is retried."""
    try:
        yield
    except ProxyUnavailable as exc:
        raise ApplicationError(str(exc), type="ProxyUnavailable") from exc
    except ReleaseNotServing as exc:
        raise ApplicationError(str(exc)) from exc
    except refused as exc:
        raise _non_retryable(exc) from exc


def _workflow_id() -> str:
    return activity.info().workflow_id or ""


class DeploymentActivities:
    def __init__(
        self,
        *,
        settings: Settings,
        session_maker: async_sessionmaker[AsyncSession],
        temporal: Client,
        docker_client: docker.DockerClient | None,
        store: ObjectStore,
        s3_factory: Callable[[], Any] | None = None,
        routes: RouteTable | None = None,
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self._settings = settings
        self._sessions = session_maker
        self._temporal = temporal
        self._store = store
        self._containers = (
            DockerReleaser(docker_client, network=settings.proxy_network)
            if docker_client is not None
            else None
        )
        self.providers = ReleaseProviders(
            ReleaseContext(settings=settings, sessions=session_maker, store=store),
            routes=routes
            or CaddyRoutes(settings.proxy_admin_url, http_port=settings.proxy_http_port),
            docker_client=docker_client,
            s3_factory=s3_factory,
            drain_seconds=drain_seconds,
        )

    def _provider(self, name: str) -> ReleaseProvider:
        try:
            return self.providers.get(name)
        except DomainError as exc:
            raise _non_retryable(exc) from exc

    # --- bookkeeping ---------------------------------------------------------------------------

    @contracts.RECORD_STATUS.implement
    async def record_status(self, upd: StatusUpdate) -> None:
        async with session_scope(self._sessions) as session:
            await projections.set_status(session, upd)
            if upd.status in projections.DONE_STATUSES and upd.status != DeploymentStatus.ACTIVE:
                await projections.close_execution(session, _workflow_id(), "completed")

    @contracts.RECORD_EXECUTION.implement
    async def record_execution(self, rec: ExecutionRecord) -> None:
        async with session_scope(self._sessions) as session:
            await projections.record_execution(
                session,
                workflow_id=rec.workflow_id,
                run_id=rec.run_id,
                workflow_type=rec.workflow_type,
                kind="deployment",
                task_queue=rec.task_queue,
                organization_id=rec.organization_id,
                project_id=rec.project_id,
                resource_id=rec.subject_id,
            )

    @contracts.ENSURE_ROW.implement
    async def ensure_row(self, inp: DeploymentInput) -> None:
        async with session_scope(self._sessions) as session:
            await projections.ensure_deployment(session, inp)

    @contracts.RECORD_DECISION.implement
    async def record_decision(self, rec: DecisionRecord) -> None:
        """One row per (deployment, person): a retried or repeated decision is the same row."""
        try:
            async with session_scope(self._sessions) as session:
                await projections.record_decision(session, rec.deployment_id, rec.decision)
        except (IntegrityError, DataError) as exc:
            # Data the database refuses (an approver who is not a user) never becomes valid:
            # fail now instead of retrying the same write.
            raise ApplicationError(
                f"the decision cannot be recorded: {exc.orig}",
                type="ValidationFailed",
                non_retryable=True,
            ) from None

    @contracts.ACQUIRE_LOCK.implement
    async def acquire_lock(self, req: LockRequest) -> None:
        """Signal-with-start the environment's lock workflow; the grant comes back as a signal."""
        if req.requested_at is None:
            async with self._sessions() as session:
                requested = await repository.requested_at(session, req.deployment_id)
            req = req.model_copy(update={"requested_at": requested})
        await self._temporal.start_workflow(
            EnvironmentDeploymentLock.run,
            LockState(environment_id=req.environment_id),
            id=lock_workflow_id(req.environment_id),
            task_queue=activity.info().task_queue,
            start_signal="request",
            start_signal_args=[req],
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )

    @contracts.ACTIVATE.implement
    async def activate(self, req: ActivationRequest) -> None:
        async with session_scope(self._sessions) as session:
            await projections.activate(
                session,
                deployment_id=req.deployment_id,
                environment_id=req.environment_id,
                url=req.url,
                health_summary=req.health_summary,
                rollback_of_deployment_id=req.rollback_of_deployment_id,
            )
            await projections.close_execution(session, _workflow_id(), "completed")

    @contracts.RECORD_USAGE.implement
    async def record_usage(self, req: UsageRequest) -> None:
        """One `deployment` usage record per deployment (idempotent on its key)."""
        async with session_scope(self._sessions) as session:
            await record_usage_row(
                session,
                organization_id=uuid.UUID(req.organization_id),
                project_id=uuid.UUID(req.project_id),
                usage_type="deployment",
                quantity=1,
                idempotency_key=f"deployment-{req.deployment_id}:usage",
                source_refs={"deployment_id": req.deployment_id},
            )

    @contracts.RECORD_ROLLBACK.implement
    async def record_rollback(self, rec: RollbackRecord) -> None:
        async with session_scope(self._sessions) as session:
            await projections.record_rollback(
                session,
                deployment_id=rec.deployment_id,
                reason=rec.reason,
                previous_id=rec.previous.deployment_id if rec.previous else None,
                health_summary=rec.health_summary,
            )
            await projections.close_execution(session, _workflow_id(), "completed")

    @contracts.PREVIOUS_HEALTHY.implement
    async def previous_healthy(self, req: PreviousLookup) -> PreviousDeployment | None:
        async with self._sessions() as session:
            row = await repository.previous_healthy(
                session, req.environment_id, req.exclude_deployment_id
            )
        if row is None:
            return None
        return PreviousDeployment(
            deployment_id=str(row.id),
            url=row.url,
            image=row.image_ref,
            container_name=container_name(str(row.id)) if releases_image(row.provider) else None,
        )

    @contracts.NEWER_LIVE.implement
    async def newer_live(self, req: PreviousLookup) -> PreviousDeployment | None:
        """A deployment of the environment requested after this one and already live."""
        async with self._sessions() as session:
            row = await repository.newer_live(
                session, req.environment_id, req.exclude_deployment_id
            )
        if row is None:
            return None
        return PreviousDeployment(deployment_id=str(row.id), url=row.url, image=row.image_ref)

    @contracts.STILL_ACTIVE.implement
    async def still_active(self, probe: MonitorProbe) -> StillActive:
        async with self._sessions() as session:
            return StillActive(active=await repository.is_active(session, probe.deployment_id))

    # --- the release ---------------------------------------------------------------------------

    @contracts.BUILD.implement
    async def build(self, req: BuildRequest) -> BuildResult:
        """Image for `docker`, published static files for `static`/`aws`; logs stored as lines."""
        provider = self._provider(req.provider)
        log = BuildLog(self._sessions, req.deployment_id)
        async with self._sessions() as session:
            scope = await repository.build_scope(session, req.deployment_id)
        pump = asyncio.create_task(log.pump(activity.heartbeat))
        try:
            with tempfile.TemporaryDirectory(prefix="fl-deploy-") as tmp:
                context = build_context(self._settings, self._store, req.source, Path(tmp), scope)
                return await provider.build(
                    req, context, publish_dotfiles=scope.publish_dotfiles, on_line=log.line
                )
        except REFUSED as exc:
            log.line(f"build failed: {exc}")
            raise _non_retryable(exc) from exc
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            await log.flush()

    @contracts.RELEASE.implement
    async def release(self, req: ReleaseRequest) -> ReleaseResult:
        provider = self._provider(req.provider)
        async with _refusals(*REFUSED):
            return await provider.release(req)

    @contracts.VERIFY_HEALTH.implement
    async def verify_health(self, req: HealthRequest) -> HealthVerdict:
        return await self._check(req, "verify")

    @contracts.MONITOR_PROBE.implement
    async def monitor_probe(self, req: HealthRequest) -> HealthVerdict:
        verdict = await self._check(req, "monitor")
        async with session_scope(self._sessions) as session:
            await projections.merge_health_summary(
                session, req.deployment_id, monitor_summary(verdict)
            )
        if req.container_name:
            await self.collect_logs(
                LogCollectRequest(
                    deployment_id=req.deployment_id, container_name=req.container_name
                )
            )
        return verdict

    async def _check(self, req: HealthRequest, phase: str) -> HealthVerdict:
        provider = self._provider(req.provider)
        async with _refusals(DomainError):
            return await check_health(
                self._sessions, provider, req, phase, heartbeat=activity.heartbeat
            )

    @contracts.COLLECT_LOGS.implement
    async def collect_logs(self, req: LogCollectRequest) -> LogCollectResult:
        """Container stdout/stderr into deployment_runtime_logs; numbered after the build lines."""
        if self._containers is None:
            return LogCollectResult(lines=0)
        lines = await asyncio.to_thread(self._containers.logs, req.deployment_id)
        # Runtime lines live at seq 1_000_000+ (build lines below), numbered by position in the
        # container's log, so re-collecting the same lines is a no-op.
        batch = [
            (1_000_000 + i, line.stream, "docker", line.message, line.timestamp)
            for i, line in enumerate(lines)
        ]
        async with session_scope(self._sessions) as session:
            await release_records.append_logs(session, req.deployment_id, batch)
        return LogCollectResult(lines=len(lines))

    # --- swap, rollback, teardown --------------------------------------------------------------

    @contracts.RETIRE.implement
    async def retire(self, req: RetireRequest) -> RetireResult:
        """The swap: the environment moves to the kept deployment, what served before goes."""
        provider = self._provider(req.provider)
        async with _refusals(DomainError):
            removed = sorted(set(await provider.retire(req)))
        async with session_scope(self._sessions) as session:
            await release_records.mark_containers_removed(session, removed)
        return RetireResult(removed=removed)

    @contracts.RESTORE_PREVIOUS.implement
    async def restore_previous(self, prev: PreviousDeployment) -> None:
        """Make sure the previous healthy version serves (restart its container / re-publish)."""
        async with self._sessions() as session:
            row = await repository.restorable(session, prev.deployment_id)
        if row is None:
            return
        provider = self._provider(row.provider)
        async with _refusals(DomainError):
            await provider.restore(row)

    @contracts.TEARDOWN_ENVIRONMENT.implement
    async def teardown_environment(self, req: TeardownRequest) -> list[str]:
        provider = self._provider(req.provider)
        async with _refusals(DomainError):  # PreviewInUse: a push deploys to it, kept
            removed = await pr_previews.tear_down_environment(self._sessions, provider, req)
        # A pull request's preview: its comment no longer shows the URL as live.
        await pr_reports.request_for_preview(
            self._sessions,
            self._temporal,
            req.environment_id,
            task_queue=self._settings.integrations_task_queue,
        )
        return removed

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.record_status,
            self.ensure_row,
            self.record_execution,
            self.record_decision,
            self.acquire_lock,
            self.build,
            self.release,
            self.verify_health,
            self.monitor_probe,
            self.still_active,
            self.collect_logs,
            self.retire,
            self.activate,
            self.record_usage,
            self.previous_healthy,
            self.newer_live,
            self.restore_previous,
            self.record_rollback,
            self.teardown_environment,
        ]
