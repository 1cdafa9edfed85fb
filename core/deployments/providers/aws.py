"""The `aws` provider: the published site uploaded to an S3 bucket configured as a website,
recorded as an infrastructure resource with its monthly cost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from core.deployments import release_records
from core.deployments.health import Probe
from core.deployments.providers.base import HealthTarget, ReleaseContext
from core.deployments.providers.static import PublishedOutputBuild
from db.models.deployments import Deployment
from db.session import session_scope
from forgeline.errors import ProviderUnavailable
from infra.image_builds import BuildFailed
from infra.s3_sites import S3WebsitePublisher, bucket_name
from workflows.deployment_models import (
    DeploymentRuntimeConfig,
    HealthRequest,
    ReleaseRequest,
    ReleaseResult,
    RetireRequest,
)


class AwsProvider(PublishedOutputBuild):
    name = "aws"

    def __init__(self, ctx: ReleaseContext, s3_factory: Callable[[], Any] | None) -> None:
        self._ctx = ctx
        self._s3_factory = s3_factory

    def _publisher(self) -> S3WebsitePublisher:
        if self._s3_factory is None:
            raise ProviderUnavailable("AWS is not configured on this worker")
        return S3WebsitePublisher(
            self._s3_factory(), endpoint_url=self._ctx.settings.s3_endpoint_url
        )

    async def release(self, req: ReleaseRequest) -> ReleaseResult:
        if not req.static_prefix:
            raise BuildFailed("aws release needs static files")
        publisher = self._publisher()
        bucket = bucket_name(req.environment_id, req.config.bucket_name)
        site = await asyncio.to_thread(
            publisher.publish, self._ctx.store, req.static_prefix, bucket, req.config.region
        )
        async with session_scope(self._ctx.sessions) as session:
            await release_records.upsert_resource(
                session,
                organization_id=req.organization_id,
                project_id=req.project_id,
                environment_id=req.environment_id,
                deployment_id=req.deployment_id,
                provider=self.name,
                resource_type="s3_bucket",
                resource_id=site.arn,
                region=site.region,
                config=site.resource_config(),
                monthly_cost=site.monthly_cost,
            )
        return ReleaseResult(url=site.url, resources=[bucket], monthly_cost=str(site.monthly_cost))

    def verify(self, req: HealthRequest, http: httpx.AsyncClient) -> HealthTarget:
        publisher = self._publisher()

        async def s3_probe() -> Probe:
            # The website endpoint is not reachable from a sandbox: the API answers for it.
            started = asyncio.get_running_loop().time()
            ok, error = await asyncio.to_thread(publisher.probe, req.bucket_name or "")
            latency = int((asyncio.get_running_loop().time() - started) * 1000)
            return Probe(req.url, ok, 200 if ok else 404, latency, error, release_records.now())

        return HealthTarget(probe=s3_probe)

    async def retire(self, req: RetireRequest) -> list[str]:
        # One bucket per environment: the new upload already replaced the old site.
        return []

    async def restore(self, previous: Deployment) -> None:
        if not previous.artifact_key:
            return
        config = DeploymentRuntimeConfig.model_validate(previous.config_snapshot or {})
        bucket = bucket_name(str(previous.environment_id), config.bucket_name)
        await asyncio.to_thread(
            self._publisher().publish,
            self._ctx.store,
            previous.artifact_key,
            bucket,
            config.region,
        )

    async def teardown(self, environment_id: str, config: DeploymentRuntimeConfig) -> list[str]:
        if self._s3_factory is not None:
            await asyncio.to_thread(
                self._publisher().delete_site, bucket_name(environment_id, config.bucket_name)
            )
        return []
