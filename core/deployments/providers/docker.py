"""The `docker` provider: the image built on this host runs as a container the reverse proxy
reaches; the environment's route moves to it once healthy and the containers before it go."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import docker
import httpx

from core.deployments import config as deployment_config
from core.deployments import release_records, repository
from core.deployments.health import check_url, probe_http
from core.deployments.providers.base import (
    HealthTarget,
    LineSink,
    ReleaseContext,
    ReleaseNotServing,
)
from core.deployments.providers.routing import ProxyRouting, deployment_route, environment_route
from db.models.deployments import Deployment
from db.session import session_scope
from forgeline.errors import ProviderUnavailable
from forgeline.statuses.deployments import ContainerStatus
from infra.deploy_containers import LABEL_DEPLOYMENT, DockerReleaser, RunningContainer
from infra.image_builds import BuildFailed, ImageBuilder, image_tag
from workflows.deployment_models import (
    BuildRequest,
    BuildResult,
    DeploymentRuntimeConfig,
    HealthRequest,
    ReleaseRequest,
    ReleaseResult,
    RetireRequest,
)


class DockerProvider:
    name = "docker"

    def __init__(
        self,
        ctx: ReleaseContext,
        routing: ProxyRouting,
        client: docker.DockerClient | None,
        *,
        drain_seconds: float,
    ) -> None:
        self._ctx = ctx
        self._routing = routing
        self._client = client
        self._drain_seconds = drain_seconds

    def releaser(self) -> DockerReleaser:
        if self._client is None:
            raise ProviderUnavailable("no Docker engine on this worker")
        return DockerReleaser(self._client, network=self._ctx.settings.proxy_network)

    async def build(
        self, req: BuildRequest, context: Path, *, publish_dotfiles: bool, on_line: LineSink
    ) -> BuildResult:
        if self._client is None:
            raise BuildFailed("no Docker engine on this worker")
        built = await asyncio.to_thread(
            ImageBuilder(self._client).build,
            context,
            tag=image_tag(req.project_id, req.source.version, req.source.commit_sha),
            dockerfile=req.source.dockerfile,
            output_dir=req.source.output_dir,
            framework=req.source.framework,
            on_line=on_line,
            labels={LABEL_DEPLOYMENT: req.deployment_id},
        )
        return BuildResult(
            image=built.tag,
            generated_dockerfile=built.generated_dockerfile,
            log_lines=built.log_lines,
        )

    async def release(self, req: ReleaseRequest) -> ReleaseResult:
        if not req.image:
            raise BuildFailed("docker release needs an image")
        running = await self._run(req.deployment_id, req.environment_id, req.image, req.config)
        # Its own route first (health checks take it); the environment's moves only when healthy.
        await self._routing.route_deployment(req.deployment_id, running.upstream)
        url = await self._routing.environment_url(req.environment_id)
        return ReleaseResult(
            url=url,
            container_id=running.id,
            container_name=running.name,
            host_port=running.host_port,
        )

    def verify(self, req: HealthRequest, http: httpx.AsyncClient) -> HealthTarget:
        # Through the proxy, on the deployment's own host: the path visitors' requests take.
        url = check_url(self._routing.deployment_url(req.deployment_id), req.policy.path)
        via = self._routing.proxy_base()
        releaser = self.releaser()

        async def dead_reason() -> str | None:
            return await asyncio.to_thread(releaser.dead_reason, req.deployment_id)

        return HealthTarget(
            probe=lambda: probe_http(http, url, req.policy, via=via), dead_reason=dead_reason
        )

    async def retire(self, req: RetireRequest) -> list[str]:
        """The swap: route the environment to the kept deployment, drain, remove the others."""
        if self._client is None:
            return []
        removed: list[str] = []
        if req.keep_deployment_id:
            removed = await self._swap_to(req.environment_id, req.keep_deployment_id)
        if req.drop_deployment_id:
            await self._routing.remove([deployment_route(req.drop_deployment_id)])
            await asyncio.to_thread(self.releaser().remove, req.drop_deployment_id)
            removed.append(req.drop_deployment_id)
        return removed

    async def _swap_to(self, environment_id: str, deployment_id: str) -> list[str]:
        releaser = self.releaser()
        async with self._ctx.sessions() as session:
            port = await repository.container_port(session, deployment_id)
        running = await asyncio.to_thread(releaser.describe, deployment_id, port)
        if running is None:
            # Healthy a moment ago: a retry finds it restarted (restart policy) or fails loudly.
            raise ReleaseNotServing(f"container of {deployment_id} is not running")
        await self._routing.route_deployment(deployment_id, running.upstream)
        await self._routing.point_environment(environment_id, running.upstream)
        others = [
            c.labels.get(LABEL_DEPLOYMENT, "")
            for c in await asyncio.to_thread(releaser.managed, environment_id)
        ]
        others = [d for d in others if d and d != deployment_id]
        if others:
            # Requests the proxy already sent to the old containers finish before they go.
            await asyncio.sleep(self._drain_seconds)
            await self._routing.remove([deployment_route(d) for d in others])
        return await asyncio.to_thread(releaser.retire_others, environment_id, deployment_id)

    async def restore(self, previous: Deployment) -> None:
        if not previous.image_ref:
            return
        config = DeploymentRuntimeConfig.model_validate(previous.config_snapshot or {})
        deployment_id, environment_id = str(previous.id), str(previous.environment_id)
        running = await self._run(deployment_id, environment_id, previous.image_ref, config)
        await self._routing.route_deployment(deployment_id, running.upstream)
        url = await self._routing.point_environment(environment_id, running.upstream)
        if url != previous.url:
            async with session_scope(self._ctx.sessions) as session:
                fresh = await session.get(Deployment, previous.id)
                if fresh is not None:
                    fresh.url = url

    async def teardown(self, environment_id: str, config: DeploymentRuntimeConfig) -> list[str]:
        if self._client is None:
            return []
        removed = await asyncio.to_thread(self.releaser().remove_environment, environment_id)
        await self._routing.remove(
            [environment_route(environment_id)] + [deployment_route(d) for d in removed]
        )
        return removed

    async def _run(
        self,
        deployment_id: str,
        environment_id: str,
        image: str,
        config: DeploymentRuntimeConfig,
    ) -> RunningContainer:
        """The deployment's container (started once; a retry finds it) and its row."""
        async with self._ctx.sessions() as session:
            secrets = await deployment_config.secret_variables(
                session, self._ctx.settings, uuid.UUID(environment_id)
            )
        running = await asyncio.to_thread(
            self.releaser().run,
            deployment_id=deployment_id,
            environment_id=environment_id,
            image=image,
            container_port=config.container_port,
            # Secret variables are decrypted here and handed straight to Docker.
            environment={**config.environment_variables, **secrets},
        )
        async with session_scope(self._ctx.sessions) as session:
            await release_records.upsert_container(
                session,
                deployment_id=deployment_id,
                name=running.name,
                container_id=running.id,
                image=image,
                host_port=running.host_port,
                container_port=config.container_port,
                status=ContainerStatus.RUNNING,
            )
        return running
