"""The `static` provider: the build output published to the object store, laid out for the
reverse proxy's file server, and served on the site's own host names (never the API's origin)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from core.deployments import repository
from core.deployments.health import check_url, probe_http
from core.deployments.providers.base import HealthTarget, LineSink, ReleaseContext
from core.deployments.providers.routing import ProxyRouting, deployment_route, environment_route
from core.deployments.site_config import released_rules
from db.models.deployments import Deployment
from infra.image_builds import BuildFailed, find_static_root
from infra.sites import materialize_site, publish_directory, remove_site, site_prefix
from workflows.deployment_models import (
    BuildRequest,
    BuildResult,
    DeploymentRuntimeConfig,
    HealthRequest,
    ReleaseRequest,
    ReleaseResult,
    RetireRequest,
)


class PublishedOutputBuild:
    """The build of the providers that serve files (`static`, `aws`): the build's static output
    published under the deployment's prefix."""

    _ctx: ReleaseContext

    async def build(
        self, req: BuildRequest, context: Path, *, publish_dotfiles: bool, on_line: LineSink
    ) -> BuildResult:
        root = find_static_root(context, req.source.output_dir)
        if root is None:
            raise BuildFailed("no static output (index.html) to publish")
        if not root.resolve().is_relative_to(context.resolve()):
            raise BuildFailed("the static output is a link out of the build")
        prefix = site_prefix(req.deployment_id)
        store = self._ctx.store
        files = await asyncio.to_thread(
            lambda: publish_directory(store, root, prefix, publish_dotfiles=publish_dotfiles)
        )
        on_line(f"published {len(files)} files to {prefix}")
        return BuildResult(static_prefix=prefix, log_lines=len(files))


class StaticProvider(PublishedOutputBuild):
    name = "static"

    def __init__(self, ctx: ReleaseContext, routing: ProxyRouting) -> None:
        self._ctx = ctx
        self._routing = routing

    async def release(self, req: ReleaseRequest) -> ReleaseResult:
        """The site on its deployment host now (health checks), the environment's once healthy."""
        if not req.static_prefix:
            raise BuildFailed("static release needs published files")
        await self.serve_site(req.deployment_id, req.static_prefix)
        return ReleaseResult(url=await self._routing.environment_url(req.environment_id))

    def verify(self, req: HealthRequest, http: httpx.AsyncClient) -> HealthTarget:
        # Through the proxy's file server on the deployment's own host, as visitors get it.
        url = check_url(self._routing.deployment_url(req.deployment_id), req.policy.path)
        via = self._routing.proxy_base()
        return HealthTarget(probe=lambda: probe_http(http, url, req.policy, via=via))

    async def retire(self, req: RetireRequest) -> list[str]:
        """Switch the environment's hosts to the kept site in one route replacement (the
        previous site served until then), or drop a failed release's route and files."""
        if req.keep_deployment_id:
            async with self._ctx.sessions() as session:
                prefix = await repository.artifact_key(session, req.keep_deployment_id)
            if prefix:
                await self.serve_site(
                    req.keep_deployment_id, prefix, environment_id=req.environment_id
                )
        if req.drop_deployment_id:
            await self._routing.remove([deployment_route(req.drop_deployment_id)])
            await asyncio.to_thread(
                remove_site, self._ctx.settings.published_sites_dir, req.drop_deployment_id
            )
            return [req.drop_deployment_id]
        return []

    async def restore(self, previous: Deployment) -> None:
        if not previous.artifact_key:
            return
        await self.serve_site(
            str(previous.id), previous.artifact_key, environment_id=str(previous.environment_id)
        )

    async def teardown(self, environment_id: str, config: DeploymentRuntimeConfig) -> list[str]:
        async with self._ctx.sessions() as session:
            ids = await repository.environment_deployment_ids(session, environment_id)
        await self._routing.remove(
            [environment_route(environment_id)] + [deployment_route(d) for d in ids]
        )
        for deployment_id in ids:
            await asyncio.to_thread(
                remove_site, self._ctx.settings.published_sites_dir, deployment_id
            )
        return []

    async def serve_site(
        self, deployment_id: str, static_prefix: str, *, environment_id: str | None = None
    ) -> str:
        """Lay the site out for the proxy's file server and give it its own host (idempotent),
        with the rules it was released with; with `environment_id`, the environment's hosts
        too, in one route replacement."""
        async with self._ctx.sessions() as session:
            rules = await released_rules(session, deployment_id)
        root = await asyncio.to_thread(
            materialize_site,
            self._ctx.store,
            static_prefix,
            self._ctx.settings.published_sites_dir,
            deployment_id,
        )
        await self._routing.route_deployment(deployment_id, "", root=str(root), rules=rules)
        if environment_id is not None:
            await self._routing.point_environment(environment_id, "", root=str(root), rules=rules)
        return str(root)
