"""A static site's rules as a deployment carries them: read from the project's config when the
deployment is created (snapshotted on its row, so a rollback serves the rules it was released
with), and turned into the proxy's rules when the site is served."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.deployments import Deployment
from infra.site_rules import HeaderRule, Redirect, Rewrite, SiteRules, site_rules_from_config
from workflows.deployment_models import (
    DeploymentRuntimeConfig,
    SiteConfig,
    SiteHeaderRule,
    SiteRedirect,
    SiteRewrite,
)


def site_config(project_config: dict[str, Any] | None) -> SiteConfig:
    """The project's well-formed rules (a malformed stored entry is left out, never fatal)."""
    rules = site_rules_from_config(project_config or {})
    return SiteConfig(
        headers=[SiteHeaderRule(source=r.source, headers=dict(r.headers)) for r in rules.headers],
        rewrites=[SiteRewrite(source=r.source, destination=r.destination) for r in rules.rewrites],
        redirects=[
            SiteRedirect(source=r.source, destination=r.destination, status_code=r.status_code)
            for r in rules.redirects
        ],
    )


def proxy_rules(site: SiteConfig) -> SiteRules:
    return SiteRules(
        headers=tuple(HeaderRule(r.source, tuple(r.headers.items())) for r in site.headers),
        rewrites=tuple(Rewrite(r.source, r.destination) for r in site.rewrites),
        redirects=tuple(Redirect(r.source, r.destination, r.status_code) for r in site.redirects),
    )


async def released_rules(session: AsyncSession, deployment_id: str) -> SiteRules:
    """The rules a deployment was released with (none for a row without a snapshot)."""
    snapshot = await session.scalar(
        select(Deployment.config_snapshot).where(Deployment.id == uuid.UUID(deployment_id))
    )
    if not isinstance(snapshot, dict):
        return SiteRules()
    return proxy_rules(DeploymentRuntimeConfig.model_validate(snapshot).site)
