"""Plan limits, enforced where they bite: `await enforce_limit(session, org_id, "projects")` before
writing; it raises PaymentRequired (402) naming the limit and the plan, and writes nothing.

The check takes a transaction-scoped advisory lock per (organization, limit), so two concurrent
creations cannot both pass the last free slot: the second waits for the first to commit and
then counts its row.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.runs import build_slots
from core.runs.plan import concurrent_builds
from db.models.accounts import Organization, OrganizationMember
from db.models.billing import Plan, PlanFeature, Subscription
from db.models.deployments import Deployment
from db.models.pipelines import Pipeline, PipelineRun
from db.models.projects import Environment, Project
from forgeline.errors import PaymentRequired
from forgeline.statuses.billing import LIVE_SUBSCRIPTION_STATUSES
from workflows.runs_models import build_slot_key

log = logging.getLogger(__name__)

PLAN_COLUMN_LIMITS = {
    "projects": "max_projects",
    "pipelines_per_project": "max_pipelines_per_project",
    "deployments_per_month": "max_deployments_per_month",
}
FEATURE_LIMITS = ("team_members", "environments_per_project", "concurrent_builds")
SWITCH_FEATURES = ("preview_deployments",)
PER_PROJECT = ("pipelines_per_project", "environments_per_project")
LIMIT_NAMES = (*PLAN_COLUMN_LIMITS, *FEATURE_LIMITS, *SWITCH_FEATURES)


@dataclass(frozen=True)
class EffectivePlan:
    slug: str
    name: str
    plan: Plan


async def effective_plan(session: AsyncSession, organization_id: uuid.UUID) -> EffectivePlan | None:
    """The plan whose limits apply now: the live subscription's (a plan change applies at once
    and is billed for the time each plan was in effect), else Free; None if no plans exist."""
    plan_id = (
        await session.scalars(
            select(Subscription.plan_id).where(
                Subscription.organization_id == organization_id,
                Subscription.status.in_(LIVE_SUBSCRIPTION_STATUSES),
            )
        )
    ).first()
    plan: Plan | None = None
    if plan_id is not None:
        plan = await session.get(Plan, plan_id)
    if plan is None:
        plan = (await session.scalars(select(Plan).where(Plan.slug == "free"))).first()
    return None if plan is None else EffectivePlan(plan.slug, plan.name, plan)


async def _feature(session: AsyncSession, plan: Plan, key: str) -> PlanFeature | None:
    return (
        await session.scalars(
            select(PlanFeature).where(
                PlanFeature.plan_id == plan.id, PlanFeature.feature_key == key
            )
        )
    ).first()


async def current_count(
    session: AsyncSession,
    organization_id: uuid.UUID,
    limit_name: str,
    project_id: uuid.UUID | None,
) -> int:
    """How much of `limit_name` the organization (or project) uses right now."""
    if limit_name == "projects":
        query = select(func.count()).where(
            Project.organization_id == organization_id, Project.status != "archived"
        )
    elif limit_name == "pipelines_per_project":
        query = select(func.count()).where(
            Pipeline.project_id == project_id, Pipeline.status != "deprecated"
        )
    elif limit_name == "environments_per_project":
        query = select(func.count()).where(
            Environment.project_id == project_id, Environment.status != "deleted"
        )
    elif limit_name == "deployments_per_month":
        now = datetime.now(UTC)
        month_start = datetime(now.year, now.month, 1, tzinfo=UTC)
        query = select(func.count()).where(
            Deployment.organization_id == organization_id, Deployment.created_at >= month_start
        )
    elif limit_name == "team_members":
        query = select(func.count()).where(OrganizationMember.organization_id == organization_id)
    elif limit_name == "concurrent_builds":
        query = select(func.count()).where(
            PipelineRun.organization_id == organization_id,
            PipelineRun.status.in_(("queued", "running")),
        )
    else:
        raise ValueError(f"unknown plan limit {limit_name!r}")
    return int(await session.scalar(query) or 0)


async def enforce_limit(
    session: AsyncSession,
    organization_id: uuid.UUID,
    limit_name: str,
    *,
    project_id: uuid.UUID | None = None,
) -> None:
    """Raise PaymentRequired when creating one more `limit_name` would exceed the plan."""
    if limit_name not in LIMIT_NAMES:
        raise ValueError(f"unknown plan limit {limit_name!r}; one of {', '.join(LIMIT_NAMES)}")
    effective = await effective_plan(session, organization_id)
    if effective is None:
        return  # no plans seeded: an unconfigured installation has no limits
    plan = effective.plan
    if limit_name in SWITCH_FEATURES:
        feature = await _feature(session, plan, limit_name)
        if feature is not None and not feature.enabled:
            raise PaymentRequired(
                f"{limit_name.replace('_', ' ').capitalize()} are not included in the "
                f"{effective.name} plan; upgrade to use them.",
                limit=limit_name,
                plan=effective.slug,
            )
        return
    if limit_name in PLAN_COLUMN_LIMITS:
        maximum: int | None = getattr(plan, PLAN_COLUMN_LIMITS[limit_name])
    else:
        feature = await _feature(session, plan, limit_name)
        maximum = None if feature is None else feature.limit_value
    if maximum is None:
        return  # unlimited
    if limit_name in PER_PROJECT and project_id is None:
        log.warning("enforce_limit(%r) called without project_id; not enforced", limit_name)
        return
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"plan-limit:{organization_id}:{limit_name}:{project_id or ''}"},
    )
    used = await current_count(session, organization_id, limit_name, project_id)
    if used >= maximum:
        scope = "this project" if limit_name in PER_PROJECT else "your organization"
        raise PaymentRequired(
            f"The {effective.name} plan allows {maximum} {limit_name.replace('_', ' ')}; "
            f"{scope} already has {used}. Upgrade the plan to add more.",
            limit=limit_name,
            plan=effective.slug,
            maximum=maximum,
            current=used,
        )


async def concurrent_builds_limit(session: AsyncSession, organization_id: uuid.UUID) -> int:
    """The organization's number of build slots now: its own override, else its plan's
    `concurrent_builds` (as a run's plan resolves it, core/runs/plan.py)."""
    settings = await session.scalar(
        select(Organization.settings).where(Organization.id == organization_id)
    )
    effective = await effective_plan(session, organization_id)
    feature = (
        None if effective is None else await _feature(session, effective.plan, "concurrent_builds")
    )
    return concurrent_builds(
        organization_id, settings, None if feature is None else (feature.limit_value,)
    )


async def apply_build_slot_limit(
    session: AsyncSession, organization_id: uuid.UUID
) -> list[build_slots.PendingGrant]:
    """Bring the organization's build-slot limit to its plan's, in the caller's transaction:
    runs queued behind the old limit are promoted up to the new one as the plan change commits.
    Returns the grants to deliver once committed (still pending ones included, so a retried
    request delivers what a crashed one could not)."""
    limit = await concurrent_builds_limit(session, organization_id)
    row = (
        await session.execute(
            text("SELECT pending_runs, pending_seqs FROM build_slot_set_limit(:key, :limit)"),
            {"key": build_slot_key(str(organization_id), ""), "limit": limit},
        )
    ).one()
    return build_slots.pending_of(list(row.pending_runs), list(row.pending_seqs))


async def apply_plan_to_build_slots(
    session: AsyncSession,
    session_maker: async_sessionmaker[AsyncSession],
    temporal: Callable[[], Awaitable[Client]],
    organization_id: uuid.UUID,
) -> None:
    """Commit a plan change with its build-slot limit: runs queued behind the old limit are
    promoted in the same transaction, and told once it has committed. A grant that cannot be
    told now stays pending (the organization's next claim or release, or a retried request,
    delivers it); the plan change itself has succeeded either way."""
    grants = await apply_build_slot_limit(session, organization_id)
    await session.commit()
    if not grants:
        return
    try:
        await build_slots.deliver_grants(
            await temporal(), session_maker, str(organization_id), grants
        )
    except Exception:  # the change is committed; delivery is retried by the next touch
        log.warning("build-slot grants of %s left pending", organization_id, exc_info=True)
