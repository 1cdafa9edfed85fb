"""Routes through the reverse proxy, shared by the providers it serves (docker, static): each
environment's host names (its generated host claimed once, unique) and each deployment's own
host, the one health checks use before the deployment takes the environment's traffic."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from core.deployments.providers.base import ReleaseContext
from db import app_hosts
from db.models.projects import Environment, Project
from db.session import session_scope
from forgeline.errors import Conflict, NotFound
from infra.proxy_routes import (
    DEPLOYMENT_ROUTE_PREFIX,
    ENV_ROUTE_PREFIX,
    Route,
    RouteTable,
    deployment_host,
    environment_hosts,
    proxy_http_base,
    public_url,
)
from infra.site_rules import SiteRules


def deployment_route(deployment_id: str) -> str:
    return f"{DEPLOYMENT_ROUTE_PREFIX}{deployment_id}"


def environment_route(environment_id: str) -> str:
    return f"{ENV_ROUTE_PREFIX}{environment_id}"


class ProxyRouting:
    def __init__(self, ctx: ReleaseContext, table: RouteTable) -> None:
        self._ctx = ctx
        self.table = table

    @property
    def _http_port(self) -> int:
        return self._ctx.settings.proxy_http_port

    def deployment_url(self, deployment_id: str) -> str:
        host = deployment_host(deployment_id, self._ctx.settings.apps_domain)
        return public_url(host, self._http_port)

    def proxy_base(self) -> str:
        """Where this worker reaches the proxy's HTTP side (health checks go through it)."""
        return proxy_http_base(self._ctx.settings.proxy_admin_url, self._http_port)

    async def environment_hosts(self, environment_id: str) -> list[str]:
        """The environment's host names, its generated host assigned (once, unique) if missing."""
        async with session_scope(self._ctx.sessions) as session:
            row = (
                await session.execute(
                    select(Environment, Project.slug)
                    .join(Project, Project.id == Environment.project_id)
                    .where(Environment.id == uuid.UUID(environment_id))
                    .with_for_update(of=Environment)
                )
            ).first()
            if row is None:
                raise NotFound(f"environment {environment_id} not found")
            env, project_slug = row
            config = dict(env.config or {})
            if not config.get(app_hosts.HOSTNAME_KEY):
                candidates = environment_hosts(
                    env.name, project_slug, environment_id, self._ctx.settings.apps_domain
                )
                for host in candidates:
                    if await app_hosts.first_taken(session, [host], excluding=env.id) is None:
                        config[app_hosts.HOSTNAME_KEY] = host
                        env.config = config
                        break
                else:
                    raise Conflict(f"no free host name for environment {environment_id}")
            return app_hosts.claimed_hosts(config)

    async def environment_url(self, environment_id: str) -> str:
        """The environment's stable URL (its first host name)."""
        hosts = await self.environment_hosts(environment_id)
        return public_url(hosts[0], self._http_port)

    async def point_environment(
        self,
        environment_id: str,
        upstream: str,
        root: str | None = None,
        rules: SiteRules | None = None,
    ) -> str:
        """Atomically route the environment's host names to one deployment; its stable URL."""
        hosts = await self.environment_hosts(environment_id)
        await self.table.put(
            Route(
                id=environment_route(environment_id),
                hosts=hosts,
                upstream=upstream,
                root=root,
                rules=rules,
            )
        )
        return public_url(hosts[0], self._http_port)

    async def route_deployment(
        self,
        deployment_id: str,
        upstream: str,
        root: str | None = None,
        rules: SiteRules | None = None,
    ) -> None:
        host = deployment_host(deployment_id, self._ctx.settings.apps_domain)
        await self.table.put(
            Route(
                id=deployment_route(deployment_id),
                hosts=[host],
                upstream=upstream,
                root=root,
                rules=rules,
            )
        )

    async def remove(self, route_ids: list[str]) -> None:
        await self.table.remove(route_ids)
