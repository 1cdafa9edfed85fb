"""The DeploymentWorkflow's activities: build, release, verify, retire, roll back, project state.

Every side effect is keyed by the deployment ID (container name, object keys, bucket, row IDs),
so a retried activity — or one retried after a worker crash — finds what its predecessor did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import httpx
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError

from core.billing.metering import record_usage as record_usage_row
from core.deployments import projections, release_records, repository
from core.deployments.health import Probe, check_url, probe_http, verify
from core.deployments.providers import require_available
from db import app_hosts
from db.models.deployments import Deployment, DeploymentApproval
from db.models.projects import Environment, Project
from db.session import session_scope
from forgeline.environment_variables import reveal
from forgeline.errors import DomainError
from forgeline.local_paths import is_inside_organization_roots
from forgeline.settings import Settings
from infra.deploy_containers import DockerReleaser, container_name
from infra.image_builds import BuildFailed, ImageBuilder, find_static_root, image_tag
from infra.proxy_routes import (
    DEPLOYMENT_ROUTE_PREFIX,
    ENV_ROUTE_PREFIX,
    CaddyRoutes,
    ProxyUnavailable,
    Route,
    RouteTable,
    deployment_host,
    environment_hosts,
    proxy_http_base,
    public_url,
)
from infra.s3_sites import S3WebsitePublisher, bucket_name
from infra.sites import (
    SitePublishRefused,
    materialize_site,
    publish_directory,
    remove_site,
    site_prefix,
)
from infra.storage import ObjectStore
from workflows.contracts import deployments as contracts
from workflows.deployment_lock import EnvironmentDeploymentLock, LockState
from workflows.deployment_models import (
    ActivationRequest,
    ApprovalDecision,
    BuildRequest,
    BuildResult,
    DecisionRecord,
    DeploymentInput,
    DeploymentRuntimeConfig,
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

logger = logging.getLogger("forgeline.deployments")

LOG_BATCH = 50
# Seconds a replaced container keeps serving after its route moved (requests already in flight).
DRAIN_SECONDS = 2.0


def _non_retryable(exc: Exception) -> ApplicationError:
    return ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True)


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
        self._routes: RouteTable = routes or CaddyRoutes(
            settings.proxy_admin_url, http_port=settings.proxy_http_port
        )
        self._drain_seconds = drain_seconds
        self._settings = settings
        self._sessions = session_maker
        self._temporal = temporal
        self._docker = docker_client
        self._store = store
        self._s3_factory = s3_factory

    # --- helpers -------------------------------------------------------------------------------

    def _releaser(self) -> DockerReleaser:
        if self._docker is None:
            raise ApplicationError(
                "no Docker engine on this worker", type="ProviderUnavailable", non_retryable=True
            )
        return DockerReleaser(self._docker, network=self._settings.proxy_network)

    def _s3(self) -> S3WebsitePublisher:
        if self._s3_factory is None:
            raise ApplicationError(
                "AWS is not configured on this worker",
                type="ProviderUnavailable",
                non_retryable=True,
            )
        return S3WebsitePublisher(self._s3_factory(), endpoint_url=self._settings.s3_endpoint_url)

    # --- routes ---------------------------------------------------------------------------------

    def _deployment_url(self, deployment_id: str) -> str:
        host = deployment_host(deployment_id, self._settings.apps_domain)
        return public_url(host, self._settings.proxy_http_port)

    async def _environment_hosts(self, environment_id: str) -> list[str]:
        """The environment's host names, its generated host assigned (once, unique) if missing."""
        async with session_scope(self._sessions) as session:
            row = (
                await session.execute(
                    select(Environment, Project.slug)
                    .join(Project, Project.id == Environment.project_id)
                    .where(Environment.id == uuid.UUID(environment_id))
                    .with_for_update(of=Environment)
                )
            ).first()
            if row is None:
                raise ApplicationError(
                    f"environment {environment_id} not found", type="NotFound", non_retryable=True
                )
            env, project_slug = row
            config = dict(env.config or {})
            if not config.get(app_hosts.HOSTNAME_KEY):
                candidates = environment_hosts(
                    env.name, project_slug, environment_id, self._settings.apps_domain
                )
                for host in candidates:
                    if await app_hosts.first_taken(session, [host], excluding=env.id) is None:
                        config[app_hosts.HOSTNAME_KEY] = host
                        env.config = config
                        break
                else:
                    raise ApplicationError(
                        f"no free host name for environment {environment_id}",
                        type="Conflict",
                        non_retryable=True,
                    )
            return app_hosts.claimed_hosts(config)

    async def _point_environment(
        self, environment_id: str, deployment_id: str, upstream: str, root: str | None = None
    ) -> str:
        """Atomically route the environment's host names to one deployment; its stable URL."""
        hosts = await self._environment_hosts(environment_id)
        await self._routes.put(
            Route(
                id=f"{ENV_ROUTE_PREFIX}{environment_id}", hosts=hosts, upstream=upstream, root=root
            )
        )
        return public_url(hosts[0], self._settings.proxy_http_port)

    async def _route_deployment(
        self, deployment_id: str, upstream: str, root: str | None = None
    ) -> None:
        host = deployment_host(deployment_id, self._settings.apps_domain)
        await self._routes.put(
            Route(
                id=f"{DEPLOYMENT_ROUTE_PREFIX}{deployment_id}",
                hosts=[host],
                upstream=upstream,
                root=root,
            )
        )

    async def _serve_site(self, deployment_id: str, static_prefix: str) -> str:
        """Lay the site out for the proxy's file server and give it its own host (idempotent)."""
        root = await asyncio.to_thread(
            materialize_site,
            self._store,
            static_prefix,
            self._settings.published_sites_dir,
            deployment_id,
        )
        await self._route_deployment(deployment_id, "", root=str(root))
        return str(root)

    async def _secret_variables(self, environment_id: str) -> dict[str, str]:
        """Secret environment variables, decrypted here and handed straight to Docker."""
        async with self._sessions() as session:
            env = await session.get(Environment, uuid.UUID(environment_id))
        stored = (env.config or {}).get("environment_variables") if env else None
        if not isinstance(stored, list):
            return {}
        secrets = [v for v in stored if isinstance(v, dict) and v.get("secret")]
        return reveal(secrets, self._settings) if secrets else {}

    # --- projections ---------------------------------------------------------------------------

    @contracts.RECORD_STATUS.implement
    async def record_status(self, upd: StatusUpdate) -> None:
        async with session_scope(self._sessions) as session:
            await projections.set_status(session, upd)
            if upd.status in projections.DONE_STATUSES and upd.status != "active":
                await projections.close_execution(
                    session, activity.info().workflow_id or "", "completed"
                )

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
        decision = rec.decision
        # Postgres text cannot hold NUL: a decision sent before the API refused it must not
        # wedge the deployment.
        reason = decision.reason.replace("\x00", "\ufffd")
        approver = uuid.UUID(decision.approver_user_id)
        deployment_id = uuid.UUID(rec.deployment_id)
        try:
            await self._record_decision(deployment_id, approver, decision, reason)
        except (IntegrityError, DataError) as exc:
            # Data the database refuses (an approver who is not a user) never becomes valid:
            # fail now instead of retrying the same write.
            raise ApplicationError(
                f"the decision cannot be recorded: {exc.orig}",
                type="ValidationFailed",
                non_retryable=True,
            ) from None

    async def _record_decision(
        self,
        deployment_id: uuid.UUID,
        approver: uuid.UUID,
        decision: ApprovalDecision,
        reason: str,
    ) -> None:
        async with session_scope(self._sessions) as session:
            row = await session.get(Deployment, deployment_id, with_for_update=True)
            if row is None:
                return
            await session.execute(
                insert(DeploymentApproval)
                .values(
                    deployment_id=deployment_id,
                    user_id=approver,
                    role=decision.approver_role,
                    approved=decision.approved,
                    reason=reason,
                )
                .on_conflict_do_nothing(index_elements=["deployment_id", "user_id"])
            )
            if decision.approved:
                row.approved_by_user_id = approver
                row.approved_at = row.approved_at or release_records.now()
                row.approval_reason = reason
            else:
                row.rejected_by_user_id = approver
                row.rejected_at = row.rejected_at or release_records.now()
                row.rejection_reason = reason

    @contracts.ACQUIRE_LOCK.implement
    async def acquire_lock(self, req: LockRequest) -> None:
        """Signal-with-start the environment's lock workflow; the grant comes back as a signal."""
        if req.requested_at is None:
            async with self._sessions() as session:
                req = req.model_copy(
                    update={
                        "requested_at": await session.scalar(
                            select(Deployment.created_at).where(
                                Deployment.id == uuid.UUID(req.deployment_id)
                            )
                        )
                    }
                )
        await self._temporal.start_workflow(
            EnvironmentDeploymentLock.run,
            LockState(environment_id=req.environment_id),
            id=f"environment-lock-{req.environment_id}",
            task_queue=activity.info().task_queue,
            start_signal="request",
            start_signal_args=[req],
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )

    # --- build ---------------------------------------------------------------------------------

    async def _build_scope(self, deployment_id: str) -> tuple[str | None, str | None, bool]:
        """The deployment's organization, pipeline run and whether dotfiles are published."""
        async with self._sessions() as session:
            row = await session.get(Deployment, uuid.UUID(deployment_id))
        if row is None:
            return None, None, False
        config = DeploymentRuntimeConfig.model_validate(row.config_snapshot or {})
        run = str(row.pipeline_run_id) if row.pipeline_run_id else None
        return str(row.organization_id), run, config.publish_dotfiles

    def _context_allowed(self, path: Path, organization_id: str | None, run_id: str | None) -> bool:
        """A build context on this host: the deployment's own run workspace, or a directory
        inside its organization's local root (never another tenant's files or the host's)."""
        if run_id is not None and path == (self._settings.workspaces_dir / run_id).resolve():
            return True
        return organization_id is not None and is_inside_organization_roots(
            path, self._settings, organization_id
        )

    def _context(
        self,
        req: BuildRequest,
        scratch: Path,
        organization_id: str | None = None,
        run_id: str | None = None,
    ) -> Path:
        source = req.source
        if source.context_key:
            archive = scratch / "context.tar.gz"
            with archive.open("wb") as out, self._store.open(source.context_key) as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            target = scratch / "context"
            target.mkdir()
            with tarfile.open(archive) as tar:
                tar.extractall(target, filter="data")
            return target
        if source.context_dir:
            path = Path(source.context_dir).resolve()
            allowed = self._context_allowed(path, organization_id, run_id)
            if not allowed or not path.is_dir():
                raise BuildFailed(f"build context {source.context_dir!r} is not available")
            return path
        raise BuildFailed("nothing to build: no source directory or stored source archive")

    @contracts.BUILD.implement
    async def build(self, req: BuildRequest) -> BuildResult:
        """Image for `docker`, published static files for `static`/`aws`; logs stored as lines."""
        try:
            provider = require_available(req.provider)
        except DomainError as exc:
            raise _non_retryable(exc) from exc
        pending: list[tuple[int, str, str, str, Any]] = []
        seq = 0

        def on_line(line: str) -> None:
            # Called from the build thread: list.append is atomic, the pump drains it.
            nonlocal seq
            seq += 1
            pending.append((seq, "build", "build", line, None))

        async def drain() -> None:
            batch = pending[: len(pending)]
            del pending[: len(batch)]
            if batch:
                async with session_scope(self._sessions) as session:
                    await release_records.append_logs(session, req.deployment_id, batch)

        async def pump() -> None:
            # Streams build lines to Postgres about once a second and heartbeats meanwhile.
            while True:
                await asyncio.sleep(1.0)
                activity.heartbeat(f"build line {seq}")
                await drain()

        organization_id, run_id, publish_dotfiles = await self._build_scope(req.deployment_id)
        pump_task = asyncio.create_task(pump())
        try:
            with tempfile.TemporaryDirectory(prefix="fl-deploy-") as tmp:
                context = self._context(req, Path(tmp), organization_id, run_id)
                if provider == "docker":
                    if self._docker is None:
                        raise BuildFailed("no Docker engine on this worker")
                    tag = image_tag(req.project_id, req.source.version, req.source.commit_sha)
                    built = await asyncio.to_thread(
                        ImageBuilder(self._docker).build,
                        context,
                        tag=tag,
                        dockerfile=req.source.dockerfile,
                        output_dir=req.source.output_dir,
                        framework=req.source.framework,
                        on_line=on_line,
                        labels={"forgeline.deployment_id": req.deployment_id},
                    )
                    result = BuildResult(
                        image=built.tag,
                        generated_dockerfile=built.generated_dockerfile,
                        log_lines=built.log_lines,
                    )
                else:
                    root = find_static_root(context, req.source.output_dir)
                    if root is None:
                        raise BuildFailed("no static output (index.html) to publish")
                    if not root.resolve().is_relative_to(context.resolve()):
                        raise BuildFailed("the static output is a link out of the build")
                    prefix = site_prefix(req.deployment_id)
                    files = await asyncio.to_thread(
                        lambda: publish_directory(
                            self._store, root, prefix, publish_dotfiles=publish_dotfiles
                        )
                    )
                    on_line(f"published {len(files)} files to {prefix}")
                    result = BuildResult(static_prefix=prefix, log_lines=len(files))
        except (BuildFailed, DomainError, FileNotFoundError, SitePublishRefused) as exc:
            on_line(f"build failed: {exc}")
            raise _non_retryable(exc) from exc
        finally:
            pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump_task
            await drain()
        return result

    # --- release -------------------------------------------------------------------------------

    @contracts.RELEASE.implement
    async def release(self, req: ReleaseRequest) -> ReleaseResult:
        try:
            provider = require_available(req.provider)
        except DomainError as exc:
            raise _non_retryable(exc) from exc
        if provider == "docker":
            return await self._release_docker(req)
        if provider == "static":
            return await self._release_static(req)
        return await self._release_aws(req)

    async def _release_static(self, req: ReleaseRequest) -> ReleaseResult:
        """The site on its own host names through the proxy, never on the API's origin: its
        deployment host now (health checks), the environment's once healthy (retire)."""
        if not req.static_prefix:
            raise ApplicationError(
                "static release needs published files", type="BuildFailed", non_retryable=True
            )
        try:
            await self._serve_site(req.deployment_id, req.static_prefix)
            hosts = await self._environment_hosts(req.environment_id)
        except ProxyUnavailable as exc:
            raise ApplicationError(str(exc), type="ProxyUnavailable") from exc
        except (SitePublishRefused, FileNotFoundError) as exc:
            raise _non_retryable(exc) from exc
        return ReleaseResult(url=public_url(hosts[0], self._settings.proxy_http_port))

    async def _release_docker(self, req: ReleaseRequest) -> ReleaseResult:
        if not req.image:
            raise ApplicationError(
                "docker release needs an image", type="BuildFailed", non_retryable=True
            )
        releaser = self._releaser()
        variables = {
            **req.config.environment_variables,
            **await self._secret_variables(req.environment_id),
        }
        running = await asyncio.to_thread(
            releaser.run,
            deployment_id=req.deployment_id,
            environment_id=req.environment_id,
            image=req.image,
            container_port=req.config.container_port,
            environment=variables,
        )
        # Its own route first (health checks take it); the environment's moves only when healthy.
        try:
            await self._route_deployment(req.deployment_id, running.upstream)
            hosts = await self._environment_hosts(req.environment_id)
        except ProxyUnavailable as exc:
            raise ApplicationError(str(exc), type="ProxyUnavailable") from exc
        async with session_scope(self._sessions) as session:
            await release_records.upsert_container(
                session,
                deployment_id=req.deployment_id,
                name=running.name,
                container_id=running.id,
                image=req.image,
                host_port=running.host_port,
                container_port=req.config.container_port,
                status="running",
            )
        return ReleaseResult(
            url=public_url(hosts[0], self._settings.proxy_http_port),
            container_id=running.id,
            container_name=running.name,
            host_port=running.host_port,
        )

    async def _release_aws(self, req: ReleaseRequest) -> ReleaseResult:
        if not req.static_prefix:
            raise ApplicationError(
                "aws release needs static files", type="BuildFailed", non_retryable=True
            )
        publisher = self._s3()
        bucket = bucket_name(req.environment_id, req.config.bucket_name)
        site = await asyncio.to_thread(
            publisher.publish, self._store, req.static_prefix, bucket, req.config.region
        )
        async with session_scope(self._sessions) as session:
            await release_records.upsert_resource(
                session,
                organization_id=req.organization_id,
                project_id=req.project_id,
                environment_id=req.environment_id,
                deployment_id=req.deployment_id,
                provider="aws",
                resource_type="s3_bucket",
                resource_id=site.arn,
                region=site.region,
                config=site.resource_config(),
                monthly_cost=site.monthly_cost,
            )
        return ReleaseResult(url=site.url, resources=[bucket], monthly_cost=str(site.monthly_cost))

    # --- health --------------------------------------------------------------------------------

    async def _probe_fn(self, req: HealthRequest, http: httpx.AsyncClient) -> Callable[[], Any]:
        if req.provider == "docker":
            # Through the proxy, on the deployment's own host: the path visitors' requests take.
            url = check_url(self._deployment_url(req.deployment_id), req.policy.path)
            via = proxy_http_base(self._settings.proxy_admin_url, self._settings.proxy_http_port)
            return lambda: probe_http(http, url, req.policy, via=via)
        if req.provider == "static":
            # Through the proxy's file server on the deployment's own host, as visitors get it.
            url = check_url(self._deployment_url(req.deployment_id), req.policy.path)
            via = proxy_http_base(self._settings.proxy_admin_url, self._settings.proxy_http_port)
            return lambda: probe_http(http, url, req.policy, via=via)
        publisher = self._s3()

        async def s3_probe() -> Probe:
            started = asyncio.get_running_loop().time()
            ok, error = await asyncio.to_thread(publisher.probe, req.bucket_name or "")
            latency = int((asyncio.get_running_loop().time() - started) * 1000)
            return Probe(req.url, ok, 200 if ok else 404, latency, error, release_records.now())

        return s3_probe

    async def _run_checks(self, req: HealthRequest, phase: str) -> HealthVerdict:
        async with session_scope(self._sessions) as session:
            number = await release_records.next_check_number(session, req.deployment_id)
        counter = [number]

        async def record(probe: Probe) -> None:
            async with session_scope(self._sessions) as session:
                await release_records.insert_health_check(
                    session,
                    deployment_id=req.deployment_id,
                    check_number=counter[0],
                    phase=phase,
                    url=probe.url,
                    status_code=probe.http_status,
                    latency_ms=probe.latency_ms,
                    ok=probe.passed,
                    error=probe.error,
                    checked_at=probe.checked_at,
                )
            counter[0] += 1

        dead = None
        if req.provider == "docker":
            releaser = self._releaser()

            async def dead_reason() -> str | None:
                return await asyncio.to_thread(releaser.dead_reason, req.deployment_id)

            dead = dead_reason
        policy = req.policy
        if req.single_probe:
            policy = policy.model_copy(update={"required_passes": 1, "failure_threshold": 1})
        async with httpx.AsyncClient() as http:
            probe = await self._probe_fn(req, http)
            return await verify(
                probe, record, policy, heartbeat=activity.heartbeat, dead_reason=dead
            )

    @contracts.VERIFY_HEALTH.implement
    async def verify_health(self, req: HealthRequest) -> HealthVerdict:
        return await self._run_checks(req, "verify")

    @contracts.MONITOR_PROBE.implement
    async def monitor_probe(self, req: HealthRequest) -> HealthVerdict:
        verdict = await self._run_checks(req, "monitor")
        summary = {
            "status": "healthy" if verdict.healthy else "unhealthy",
            "last_check_at": verdict.checked_at.isoformat() if verdict.checked_at else None,
            "response_time_ms": verdict.last_latency_ms,
            "http_status": verdict.last_status,
            "monitor": True,
            "reason": verdict.reason,
        }
        async with session_scope(self._sessions) as session:
            row = await session.get(Deployment, uuid.UUID(req.deployment_id))
            if row is not None:
                row.health_summary = {**(row.health_summary or {}), **summary}
        if req.container_name:
            await self.collect_logs(
                LogCollectRequest(
                    deployment_id=req.deployment_id, container_name=req.container_name
                )
            )
        return verdict

    @contracts.STILL_ACTIVE.implement
    async def still_active(self, probe: MonitorProbe) -> StillActive:
        async with session_scope(self._sessions) as session:
            status = await session.scalar(
                select(Deployment.status).where(
                    Deployment.id == uuid.UUID(probe.deployment_id), Deployment.deleted_at.is_(None)
                )
            )
        return StillActive(active=status == "active")

    @contracts.COLLECT_LOGS.implement
    async def collect_logs(self, req: LogCollectRequest) -> LogCollectResult:
        """Container stdout/stderr into deployment_runtime_logs; numbered after the build lines."""
        if self._docker is None:
            return LogCollectResult(lines=0)
        lines = await asyncio.to_thread(self._releaser().logs, req.deployment_id)
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
        """The swap: route the environment to the kept deployment, drain, remove the others."""
        removed: list[str] = []
        if req.provider == "static":
            return await self._retire_static(req)
        if req.provider == "docker" and self._docker is not None:
            releaser = self._releaser()
            try:
                if req.keep_deployment_id:
                    removed = await self._swap_to(req.environment_id, req.keep_deployment_id)
                if req.drop_deployment_id:
                    await self._routes.remove(
                        [f"{DEPLOYMENT_ROUTE_PREFIX}{req.drop_deployment_id}"]
                    )
                    await asyncio.to_thread(releaser.remove, req.drop_deployment_id)
                    removed.append(req.drop_deployment_id)
            except ProxyUnavailable as exc:
                raise ApplicationError(str(exc), type="ProxyUnavailable") from exc
        async with session_scope(self._sessions) as session:
            await release_records.mark_containers_removed(session, sorted(set(removed)))
        return RetireResult(removed=sorted(set(removed)))

    async def _retire_static(self, req: RetireRequest) -> RetireResult:
        """Switch the environment's hosts to the kept site in one route replacement (the
        previous site served until then), or drop a failed release's route and files."""
        try:
            if req.keep_deployment_id:
                async with self._sessions() as session:
                    prefix = await session.scalar(
                        select(Deployment.artifact_key).where(
                            Deployment.id == uuid.UUID(req.keep_deployment_id)
                        )
                    )
                if prefix:
                    root = await self._serve_site(req.keep_deployment_id, prefix)
                    await self._point_environment(
                        req.environment_id, req.keep_deployment_id, "", root=root
                    )
            if req.drop_deployment_id:
                await self._routes.remove([f"{DEPLOYMENT_ROUTE_PREFIX}{req.drop_deployment_id}"])
                await asyncio.to_thread(
                    remove_site, self._settings.published_sites_dir, req.drop_deployment_id
                )
        except ProxyUnavailable as exc:
            raise ApplicationError(str(exc), type="ProxyUnavailable") from exc
        return RetireResult(removed=[req.drop_deployment_id] if req.drop_deployment_id else [])

    async def _container_port(self, deployment_id: str) -> int:
        async with self._sessions() as session:
            snapshot = await session.scalar(
                select(Deployment.config_snapshot).where(Deployment.id == uuid.UUID(deployment_id))
            )
        return DeploymentRuntimeConfig.model_validate(snapshot or {}).container_port

    async def _swap_to(self, environment_id: str, deployment_id: str) -> list[str]:
        releaser = self._releaser()
        port = await self._container_port(deployment_id)
        running = await asyncio.to_thread(releaser.describe, deployment_id, port)
        if running is None:
            # Healthy a moment ago: a retry finds it restarted (restart policy) or fails loudly.
            raise ApplicationError(f"container of {deployment_id} is not running")
        await self._route_deployment(deployment_id, running.upstream)
        await self._point_environment(environment_id, deployment_id, running.upstream)
        others = [
            c.labels.get("forgeline.deployment_id", "")
            for c in await asyncio.to_thread(releaser.managed, environment_id)
        ]
        others = [d for d in others if d and d != deployment_id]
        if others:
            # Requests the proxy already sent to the old containers finish before they go.
            await asyncio.sleep(self._drain_seconds)
            await self._routes.remove([f"{DEPLOYMENT_ROUTE_PREFIX}{d}" for d in others])
        return await asyncio.to_thread(releaser.retire_others, environment_id, deployment_id)

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
            await projections.close_execution(
                session, activity.info().workflow_id or "", "completed"
            )

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

    @contracts.PREVIOUS_HEALTHY.implement
    async def previous_healthy(self, req: PreviousLookup) -> PreviousDeployment | None:
        async with session_scope(self._sessions) as session:
            row = await repository.previous_healthy(
                session, req.environment_id, req.exclude_deployment_id
            )
        if row is None:
            return None
        return PreviousDeployment(
            deployment_id=str(row.id),
            url=row.url,
            image=row.image_ref,
            container_name=container_name(str(row.id)) if row.provider == "docker" else None,
        )

    @contracts.NEWER_LIVE.implement
    async def newer_live(self, req: PreviousLookup) -> PreviousDeployment | None:
        """A deployment of the environment requested after this one and already live."""
        async with session_scope(self._sessions) as session:
            row = await repository.newer_live(
                session, req.environment_id, req.exclude_deployment_id
            )
        if row is None:
            return None
        return PreviousDeployment(deployment_id=str(row.id), url=row.url, image=row.image_ref)

    @contracts.RESTORE_PREVIOUS.implement
    async def restore_previous(self, prev: PreviousDeployment) -> None:
        """Make sure the previous healthy version serves (restart its container / re-publish)."""
        async with session_scope(self._sessions) as session:
            row = await session.get(Deployment, uuid.UUID(prev.deployment_id))
            env = await session.get(Environment, row.environment_id) if row else None
        if row is None or env is None:
            return
        config = DeploymentRuntimeConfig.model_validate(row.config_snapshot or {})
        if row.provider == "docker" and row.image_ref:
            releaser = self._releaser()
            running = await asyncio.to_thread(
                releaser.run,
                deployment_id=str(row.id),
                environment_id=str(row.environment_id),
                image=row.image_ref,
                container_port=config.container_port,
                environment={
                    **config.environment_variables,
                    **await self._secret_variables(str(row.environment_id)),
                },
            )
            try:
                await self._route_deployment(str(row.id), running.upstream)
                url = await self._point_environment(
                    str(row.environment_id), str(row.id), running.upstream
                )
            except ProxyUnavailable as exc:
                raise ApplicationError(str(exc), type="ProxyUnavailable") from exc
            async with session_scope(self._sessions) as session:
                await release_records.upsert_container(
                    session,
                    deployment_id=str(row.id),
                    name=running.name,
                    container_id=running.id,
                    image=row.image_ref,
                    host_port=running.host_port,
                    container_port=config.container_port,
                    status="running",
                )
                if url != row.url:
                    fresh = await session.get(Deployment, row.id)
                    if fresh is not None:
                        fresh.url = url
        elif row.provider == "static" and row.artifact_key:
            try:
                root = await self._serve_site(str(row.id), row.artifact_key)
                await self._point_environment(str(row.environment_id), str(row.id), "", root=root)
            except ProxyUnavailable as exc:
                raise ApplicationError(str(exc), type="ProxyUnavailable") from exc
        elif row.provider == "aws" and row.artifact_key:
            bucket = bucket_name(str(row.environment_id), config.bucket_name)
            await asyncio.to_thread(
                self._s3().publish, self._store, row.artifact_key, bucket, config.region
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
            await projections.close_execution(
                session, activity.info().workflow_id or "", "completed"
            )

    @contracts.TEARDOWN_ENVIRONMENT.implement
    async def teardown_environment(self, req: TeardownRequest) -> list[str]:
        removed: list[str] = []
        if req.provider == "static":
            await self._teardown_sites(req.environment_id)
        if self._docker is not None:
            removed = await asyncio.to_thread(
                self._releaser().remove_environment, req.environment_id
            )
            try:
                await self._routes.remove(
                    [f"{ENV_ROUTE_PREFIX}{req.environment_id}"]
                    + [f"{DEPLOYMENT_ROUTE_PREFIX}{d}" for d in removed]
                )
            except ProxyUnavailable as exc:
                raise ApplicationError(str(exc), type="ProxyUnavailable") from exc
        async with session_scope(self._sessions) as session:
            env = await session.get(Environment, uuid.UUID(req.environment_id))
            if env is None:
                return removed
            config = DeploymentRuntimeConfig.model_validate(
                {k: v for k, v in (env.config or {}).items() if k in ("bucket_name", "region")}
            )
            env.status = "deleted"
            await release_records.mark_containers_removed(session, removed)
            await session.execute(
                update(Deployment)
                .where(Deployment.environment_id == env.id, Deployment.status == "active")
                .values(status="superseded", error=f"preview torn down: {req.reason}")
            )
        if req.provider == "aws" and self._s3_factory is not None:
            await asyncio.to_thread(
                self._s3().delete_site, bucket_name(req.environment_id, config.bucket_name)
            )
        return removed

    async def _teardown_sites(self, environment_id: str) -> None:
        async with self._sessions() as session:
            ids = (
                await session.scalars(
                    select(Deployment.id).where(
                        Deployment.environment_id == uuid.UUID(environment_id)
                    )
                )
            ).all()
        try:
            await self._routes.remove(
                [f"{ENV_ROUTE_PREFIX}{environment_id}"]
                + [f"{DEPLOYMENT_ROUTE_PREFIX}{d}" for d in ids]
            )
        except ProxyUnavailable as exc:
            raise ApplicationError(str(exc), type="ProxyUnavailable") from exc
        for deployment_id in ids:
            await asyncio.to_thread(
                remove_site, self._settings.published_sites_dir, str(deployment_id)
            )

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
