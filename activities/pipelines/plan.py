"""A run's rows turned into its RunPlan: stage specs with hashes, reusable stages, slot limit."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from sqlalchemy import exists, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.accounts import Organization
from db.models.billing import Plan, PlanFeature, Subscription
from db.models.pipelines import Pipeline, PipelineRun, PipelineStage, StageExecution
from db.models.projects import Repository
from workflows.pipeline_models import ReusableStage, RunPlan, StageConditions, StageSpec

# Without a subscription an organization is on the free tier: one build at a time.
DEFAULT_CONCURRENT_BUILDS = 1
UNLIMITED_CONCURRENT_BUILDS = 1000
ACTIVE_SUBSCRIPTION = ("trialing", "active", "past_due")


def stage_script(commands: list[Any]) -> str:
    """Steps become one `sh -e` script; each step is echoed like GitHub Actions' `Run` lines."""
    lines = ["set -e"]
    for step in commands:
        run = step.get("run") if isinstance(step, dict) else str(step)
        if not run:
            continue
        name = step.get("name") if isinstance(step, dict) else None
        if name:
            lines.append(f"echo {json.dumps('>> ' + str(name))}")
        lines.append(str(run))
    return "\n".join(lines)


def conditions_of(raw: dict[str, Any]) -> StageConditions:
    branches = raw.get("branch") or raw.get("branches") or []
    paths = raw.get("files_changed") or raw.get("paths") or []
    rule = raw.get("previous_stage_status") or "success"
    if rule not in ("success", "failure", "always"):
        rule = "success"
    return StageConditions(
        branches=[branches] if isinstance(branches, str) else list(branches),
        paths=[paths] if isinstance(paths, str) else list(paths),
        previous_stage_status=rule,
    )


def spec_hash(spec: StageSpec) -> str:
    data = spec.model_dump(mode="json", exclude={"spec_hash", "stage_id", "position"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def stage_spec(stage: PipelineStage, pipeline: Pipeline) -> StageSpec:
    policy = pipeline.retry_policy or {}
    env = {str(k): str(v) for k, v in (stage.environment or {}).items()}
    limits = (pipeline.config or {}).get("resources", {})
    spec = StageSpec(
        name=stage.name,
        stage_id=str(stage.id),
        stage_type=stage.stage_type,
        position=stage.position,
        image=stage.image or (pipeline.config or {}).get("default_image"),
        script=stage_script(stage.commands or []),
        conditions=conditions_of(stage.conditions or {}),
        timeout_seconds=stage.timeout_seconds,
        depends_on=list(stage.depends_on or []),
        retry_count=stage.retry_count or int(policy.get("max_retries", 0)),
        retryable_exit_codes=list(stage.retryable_exit_codes or [])
        or list(policy.get("retryable_exit_codes", [])),
        allow_failure=stage.allow_failure,
        artifact_paths=list(stage.artifact_paths or []),
        network_enabled=stage.network_enabled,
        working_directory=stage.working_directory,
        environment=env,
        cpus=limits.get("cpus"),
        memory_mb=limits.get("memory_mb"),
        pids_limit=limits.get("pids_limit"),
        retry_initial_interval_seconds=float(policy.get("initial_interval_seconds", 1.0)),
        retry_maximum_interval_seconds=float(policy.get("maximum_interval_seconds", 30.0)),
        deploy_environment_id=(stage.conditions or {}).get("deploy_environment_id"),
    )
    spec.spec_hash = spec_hash(spec)
    return spec


async def concurrent_builds(
    session: AsyncSession, organization_id: uuid.UUID | None, org_settings: dict[str, Any] | None
) -> int:
    """The organization's override, else its subscription's plan limit, else the free plan's."""
    if organization_id is None:
        return DEFAULT_CONCURRENT_BUILDS
    override = (org_settings or {}).get("concurrent_builds")
    if isinstance(override, int) and override > 0:
        return override
    subscribed = (
        select(PlanFeature.limit_value, literal(0).label("rank"))
        .join(Subscription, Subscription.plan_id == PlanFeature.plan_id)
        .where(
            Subscription.organization_id == organization_id,
            Subscription.status.in_(ACTIVE_SUBSCRIPTION),
            PlanFeature.feature_key == "concurrent_builds",
        )
    )
    free = (
        select(PlanFeature.limit_value, literal(1).label("rank"))
        .join(Plan, Plan.id == PlanFeature.plan_id)
        .where(Plan.slug == "free", PlanFeature.feature_key == "concurrent_builds")
    )
    # One round trip: the subscription's row wins over the free plan's.
    row = (await session.execute(union_all(subscribed, free).order_by("rank").limit(1))).first()
    if row is None:
        return DEFAULT_CONCURRENT_BUILDS
    limit = row[0]
    return UNLIMITED_CONCURRENT_BUILDS if limit is None else max(1, int(limit))


async def reusable_stages(
    session: AsyncSession, run: PipelineRun, specs: list[StageSpec]
) -> dict[str, ReusableStage]:
    """Stages that succeeded in the run being re-run, at the same commit with the same spec."""
    if run.reuse_from_run_id is None:
        return {}
    source = await session.get(PipelineRun, run.reuse_from_run_id)
    if source is None or source.commit_sha != run.commit_sha:
        return {}
    old_hashes: dict[str, str] = (source.metadata_ or {}).get("stage_spec_hashes", {})
    rows = (
        await session.execute(
            select(StageExecution)
            .where(StageExecution.run_id == source.id, StageExecution.status == "success")
            .order_by(StageExecution.attempt.desc())
        )
    ).scalars()
    reusable: dict[str, ReusableStage] = {}
    current = {s.name: s.spec_hash for s in specs}
    for row in rows:
        name = row.stage_name
        if name in reusable or name not in current or old_hashes.get(name) != current[name]:
            continue
        reusable[name] = ReusableStage(
            execution_id=str(row.reused_from_id or row.id),
            spec_hash=current[name],
            exit_code=row.exit_code,
        )
    return reusable


async def load_plan(session: AsyncSession, run_id: str) -> RunPlan | None:
    has_repository = (
        exists().where(Repository.project_id == PipelineRun.project_id).label("has_repository")
    )
    # The run (locked: its metadata is updated below), its pipeline, whether it has a repository
    # and the organization's settings in one round trip.
    found = (
        await session.execute(
            select(PipelineRun, Pipeline, has_repository, Organization.settings)
            .join(Pipeline, Pipeline.id == PipelineRun.pipeline_id)
            .outerjoin(Organization, Organization.id == PipelineRun.organization_id)
            .where(PipelineRun.id == uuid.UUID(run_id))
            .with_for_update(of=PipelineRun)
        )
    ).one_or_none()
    if found is None:
        return None
    run, pipeline, has_repo, org_settings = found
    stages = (
        await session.execute(
            select(PipelineStage)
            .where(PipelineStage.pipeline_id == pipeline.id)
            .order_by(PipelineStage.position, PipelineStage.name)
        )
    ).scalars()
    specs = [stage_spec(s, pipeline) for s in stages]
    # The hashes are what a later rerun compares against: stored with the run, before it runs.
    metadata = dict(run.metadata_ or {})
    metadata["stage_spec_hashes"] = {s.name: s.spec_hash for s in specs}
    run.metadata_ = metadata
    return RunPlan(
        run_id=run_id,
        run_number=run.run_number,
        pipeline_id=str(pipeline.id),
        project_id=str(run.project_id),
        organization_id=str(run.organization_id) if run.organization_id else None,
        branch=run.branch,
        commit_sha=run.commit_sha,
        has_repository=bool(has_repo),
        changed_paths=(run.metadata_ or {}).get("changed_paths"),
        stages=specs,
        reusable=await reusable_stages(session, run, specs),
        concurrent_builds=await concurrent_builds(session, run.organization_id, org_settings),
        status=run.status,  # type: ignore[arg-type]
    )
