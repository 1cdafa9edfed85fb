"""Preview environments per pull request: a run started by a pull/merge request deploys to the
pull request's own preview environment (`preview-pr-<number>`, created on its first deploy,
reused by every later push) instead of the environment its deploy stage names. The preview takes
the named environment's provider and release settings (health checks, port), never its host names,
domains or variables: a pull request must not take another environment's traffic or secrets.
Its lifetime (TTL, teardown when the pull request closes) is PreviewEnvironmentWorkflow's; a
teardown holds the lock deploys to the preview take, and one because the TTL ran out refuses
(PreviewInUse) when a push began deploying to the preview meanwhile: the push's preview wins."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.deployments import projections, repository
from core.deployments.providers.base import ReleaseProvider
from core.deployments.service import DEFAULT_PREVIEW_TTL_SECONDS
from db.models.deployments import Deployment
from db.models.integrations import PullRequest
from db.models.pipelines import PipelineRun
from db.models.projects import Environment
from db.session import session_scope
from forgeline.errors import Conflict
from forgeline.settings import DEPLOYMENTS_TASK_QUEUE
from forgeline.statuses.deployments import (
    TERMINAL_STATUSES,
    DeploymentStatus,
    EnvironmentStatus,
)
from workflows.deployment import search_attributes
from workflows.deployment_models import DeploymentRuntimeConfig, PreviewInput, TeardownRequest
from workflows.preview import PreviewEnvironmentWorkflow, preview_workflow_id

# What a preview copies from the environment the deploy stage names.
COPIED_SETTINGS = (
    "health_check_path",
    "health_check_passes",
    "healthy_threshold",
    "health_check_failure_threshold",
    "health_check_interval_seconds",
    "health_check_window_seconds",
    "health_check_timeout_seconds",
    "health_check_max_latency_ms",
    "container_port",
    "port",
    "region",
    "publish_dotfiles",
    "monitor_interval_seconds",
)
CLOSED_STATES = ("closed", "merged")


class PreviewInUse(Conflict, title="Preview in use", slug="preview-in-use"):
    """The preview's time to live ran out while a push was deploying to it: it is kept."""


def _name_lock(project_id: uuid.UUID, name: str) -> Select[Any]:
    """The lock a deploy to the environment called `name` and its teardown take (held until
    the transaction ends)."""
    return select(func.pg_advisory_xact_lock(func.hashtextextended(f"{project_id}:{name}", 0)))


def preview_name(pr_number: int) -> str:
    return f"preview-pr-{pr_number}"


def pull_request_of(run: PipelineRun) -> int | None:
    """The pull request number when the run was started by a pull/merge request event."""
    forge = (run.metadata_ or {}).get("forge")
    if not isinstance(forge, dict) or forge.get("event") != "pull_request":
        return None
    number = forge.get("pr_number")
    return number if isinstance(number, int) and number > 0 else None


def _settings(named: Environment) -> dict[str, Any]:
    config = named.config or {}
    return {key: config[key] for key in COPIED_SETTINGS if key in config}


async def preview_for_run(
    session: AsyncSession, run: PipelineRun, named: Environment
) -> Environment:
    """The environment the run's deploy stage releases to: `named` for a run that is not a pull
    request's, else the pull request's preview (created, or brought back after a teardown).
    Concurrent deploys of one pull request find one environment (a lock on its name)."""
    number = pull_request_of(run)
    if number is None or named.env_type == "preview":
        return named
    if (run.metadata_ or {}).get("forge", {}).get("from_fork"):
        raise Conflict("pull requests from forks do not get preview deployments")
    state = await session.scalar(
        select(PullRequest.status).where(
            PullRequest.project_id == run.project_id, PullRequest.pr_number == number
        )
    )
    if state in CLOSED_STATES:
        raise Conflict(f"pull request #{number} is {state}: no preview is deployed for it")
    name = preview_name(number)
    await session.execute(_name_lock(run.project_id, name))
    preview = await session.scalar(
        select(Environment)
        .where(Environment.project_id == run.project_id, Environment.name == name)
        .with_for_update()
    )
    if preview is None:
        preview = Environment(
            id=uuid.uuid4(),
            project_id=run.project_id,
            name=name,
            env_type="preview",
            provider=named.provider,
            config=_settings(named),
            is_protected=False,
            required_approvals=0,
            preview_branch=(run.branch or "")[:255] or None,
            preview_pr_number=number,
        )
        session.add(preview)
        await session.flush()
        return preview
    if preview.env_type != "preview" or preview.preview_pr_number != number:
        raise Conflict(f"environment {name!r} exists and is not this pull request's preview")
    if preview.status == EnvironmentStatus.DELETED:
        # Reopened after a teardown: the same environment serves again.
        preview.status = EnvironmentStatus.ACTIVE
    preview.preview_branch = (run.branch or "")[:255] or preview.preview_branch
    await session.flush()
    return preview


async def _signal_lifetime(
    temporal: Client,
    environment: Environment,
    organization_id: uuid.UUID | str,
    signal: str,
    args: list[Any],
    task_queue: str,
) -> None:
    await temporal.start_workflow(
        PreviewEnvironmentWorkflow.run,
        PreviewInput(
            environment_id=str(environment.id),
            organization_id=str(organization_id),
            project_id=str(environment.project_id),
            provider=environment.provider,
            ttl_seconds=DEFAULT_PREVIEW_TTL_SECONDS,
        ),
        id=preview_workflow_id(str(environment.id)),
        task_queue=task_queue,
        start_signal=signal,
        start_signal_args=args,
        search_attributes=search_attributes(
            str(organization_id), str(environment.project_id), "preview"
        ),
    )


async def keep_alive(
    temporal: Client,
    environment: Environment,
    organization_id: uuid.UUID | str,
    *,
    task_queue: str = DEPLOYMENTS_TASK_QUEUE,
) -> None:
    """A pull request's live preview: its lifetime started (TTL from now) or extended."""
    await _signal_lifetime(temporal, environment, organization_id, "extend", [], task_queue)


async def tear_down(
    temporal: Client,
    environment: Environment,
    organization_id: uuid.UUID | str,
    reason: str,
    *,
    task_queue: str = DEPLOYMENTS_TASK_QUEUE,
) -> None:
    """Tear the preview down now, whether or not its lifetime is running (signal-with-start);
    a preview already torn down is torn down again harmlessly."""
    await _signal_lifetime(temporal, environment, organization_id, "teardown", [reason], task_queue)


async def previews_of(
    session: AsyncSession, project_id: uuid.UUID, pr_number: int
) -> list[Environment]:
    """The pull request's preview environments that still exist."""
    rows = await session.scalars(
        select(Environment).where(
            Environment.project_id == project_id,
            Environment.env_type == "preview",
            Environment.preview_pr_number == pr_number,
            Environment.status != EnvironmentStatus.DELETED,
        )
    )
    return list(rows)


async def serving_previews_of(
    session: AsyncSession, project_id: uuid.UUID, pr_number: int
) -> list[Environment]:
    """The pull request's previews with a live deployment, torn down or not: a deployment that
    went live after its pull request closed (and its preview was torn down) shows up here."""
    live = select(Deployment.environment_id).where(Deployment.status == DeploymentStatus.ACTIVE)
    rows = await session.scalars(
        select(Environment).where(
            Environment.project_id == project_id,
            Environment.env_type == "preview",
            Environment.preview_pr_number == pr_number,
            Environment.id.in_(live),
        )
    )
    return list(rows)


async def hold_for_teardown(
    session: AsyncSession, environment_id: str, quiet_since: datetime | None
) -> None:
    """Take the lock deploys to the environment take, until the caller's transaction ends: no
    deploy begins while it is torn down. With `quiet_since` (its time to live ran out), refuse
    with PreviewInUse when a deploy to it began since then or is still under way."""
    env = await session.get(Environment, uuid.UUID(environment_id))
    if env is None:
        return
    await session.execute(_name_lock(env.project_id, env.name))
    if quiet_since is None:
        return
    deploying = await session.scalar(
        select(Deployment.id)
        .where(
            Deployment.environment_id == env.id,
            or_(
                Deployment.created_at > quiet_since,
                Deployment.status.not_in(TERMINAL_STATUSES),
            ),
        )
        .limit(1)
    )
    if deploying is not None:
        raise PreviewInUse(
            f"a deploy to {env.name} began after its time to live ran out: the preview is kept"
        )


async def tear_down_environment(
    session_maker: async_sessionmaker[AsyncSession],
    provider: ReleaseProvider,
    req: TeardownRequest,
) -> list[str]:
    """Remove what the environment serves and mark it deleted (its live deployment
    superseded), under the deploy lock; the IDs of the removed deployments."""
    async with session_scope(session_maker) as session:
        await hold_for_teardown(session, req.environment_id, req.quiet_since)
        config = await repository.environment_release_config(session, req.environment_id)
        removed = await provider.teardown(req.environment_id, config or DeploymentRuntimeConfig())
        await projections.retire_environment(session, req.environment_id, removed, req.reason)
    return removed
