"""The release providers of one worker, built once with its clients, looked up by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker

from core.deployments.providers import require_available
from core.deployments.providers.aws import AwsProvider
from core.deployments.providers.base import ReleaseContext, ReleaseProvider
from core.deployments.providers.docker import DockerProvider
from core.deployments.providers.routing import ProxyRouting
from core.deployments.providers.static import StaticProvider
from infra.proxy_routes import RouteTable


class ReleaseProviders:
    def __init__(
        self,
        ctx: ReleaseContext,
        *,
        routes: RouteTable,
        docker_client: docker.DockerClient | None,
        s3_factory: Callable[[], Any] | None,
        drain_seconds: float,
    ) -> None:
        self.routing = ProxyRouting(ctx, routes)
        self.docker = DockerProvider(ctx, self.routing, docker_client, drain_seconds=drain_seconds)
        self.static = StaticProvider(ctx, self.routing)
        self.aws = AwsProvider(ctx, s3_factory)
        self._by_name: dict[str, ReleaseProvider] = {
            p.name: p for p in (self.docker, self.static, self.aws)
        }

    def get(self, name: str) -> ReleaseProvider:
        """The provider an environment names (ProviderUnavailable / ValidationFailed if none)."""
        return self._by_name[require_available(name)]
