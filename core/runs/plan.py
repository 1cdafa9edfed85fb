"""A run's rows turned into its RunPlan: stage specs with hashes, reusable stages, slot limit.

Read on the asyncpg connection in one statement (two more for a rerun): preparing a run is on the
path of every run, and the ORM would cost several milliseconds more.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from core.runs.run_limits import plan_limits_sql, run_limits
from core.runs.stage_runtime_plan import expand_legs, stage_cache, stage_matrix, stage_services
from forgeline.statuses.runs import PreviousStageRule
from workflows.runs_models import ReusableStage, RunPlan, StageConditions, StageSpec

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
    rule = raw.get("previous_stage_status") or PreviousStageRule.SUCCESS
    if rule not in tuple(PreviousStageRule):
        rule = PreviousStageRule.SUCCESS
    return StageConditions(
        branches=[branches] if isinstance(branches, str) else list(branches),
        paths=[paths] if isinstance(paths, str) else list(paths),
        previous_stage_status=rule,
    )


# Fields added after specs were first hashed: left out at their defaults, so a rerun of a run
# from before them still reuses its stages.
_LATER_DEFAULTS: dict[str, Any] = {
    "log_max_bytes": None,
    "on_log_limit": "fail",
    "on_artifact_limit": "warn",
    "skip": None,
    "cache": None,
    "services": [],
    "matrix_leg": None,
}


VERIFICATION_SKIP = "verification run: deploy stages do not run"


def spec_hash(spec: StageSpec) -> str:
    data = spec.model_dump(mode="json", exclude={"spec_hash", "stage_id", "position"})
    for key, default in _LATER_DEFAULTS.items():
        if data.get(key) == default:
            del data[key]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def stage_spec(stage: Mapping[str, Any], pipeline: Mapping[str, Any]) -> StageSpec:
    """A `pipeline_stages` row (column names as keys) with its pipeline's retry policy/config
    (its `variables` under the stage's own environment) and its project's root directory (the
    working directory of a stage that names none)."""
    policy = pipeline.get("retry_policy") or {}
    config = pipeline.get("config") or {}
    variables = config.get("variables")
    if not isinstance(variables, dict):
        variables = {}
    env = {str(k): str(v) for k, v in {**variables, **(stage.get("environment") or {})}.items()}
    limits = config.get("resources", {})
    conditions = stage.get("conditions") or {}
    output_limits = config.get("limits")
    if not isinstance(output_limits, dict):
        output_limits = {}
    log_max = output_limits.get("log_max_bytes")
    spec = StageSpec(
        name=stage["name"],
        stage_id=str(stage["id"]),
        stage_type=stage["stage_type"],
        position=stage["position"],
        image=stage.get("image") or config.get("default_image"),
        script=stage_script(stage.get("commands") or []),
        conditions=conditions_of(conditions),
        timeout_seconds=stage["timeout_seconds"],
        depends_on=list(stage.get("depends_on") or []),
        retry_count=stage.get("retry_count") or int(policy.get("max_retries", 0)),
        retryable_exit_codes=list(stage.get("retryable_exit_codes") or [])
        or list(policy.get("retryable_exit_codes", [])),
        allow_failure=bool(stage.get("allow_failure")),
        artifact_paths=list(stage.get("artifact_paths") or []),
        network_enabled=bool(stage.get("network_enabled")),
        working_directory=stage.get("working_directory") or pipeline.get("root_directory"),
        environment=env,
        cpus=limits.get("cpus"),
        memory_mb=limits.get("memory_mb"),
        pids_limit=limits.get("pids_limit"),
        retry_initial_interval_seconds=float(policy.get("initial_interval_seconds", 1.0)),
        retry_maximum_interval_seconds=float(policy.get("maximum_interval_seconds", 30.0)),
        deploy_environment_id=conditions.get("deploy_environment_id"),
        log_max_bytes=log_max if type(log_max) is int and log_max > 0 else None,
        on_log_limit="truncate" if output_limits.get("on_log_limit") == "truncate" else "fail",
        on_artifact_limit="fail" if output_limits.get("on_artifact_limit") == "fail" else "warn",
        cache=stage_cache(stage),
        services=stage_services(stage),
    )
    spec.spec_hash = spec_hash(spec)
    return spec


def concurrent_builds(
    organization_id: uuid.UUID | None,
    org_settings: dict[str, Any] | None,
    plan_limit: tuple[int | None] | None,
) -> int:
    """The organization's override, else its subscription's plan limit (else the free plan's):
    `plan_limit` is that plan's row, its value None for unlimited; no row at all means the
    default."""
    if organization_id is None:
        return DEFAULT_CONCURRENT_BUILDS
    override = (org_settings or {}).get("concurrent_builds")
    if isinstance(override, int) and override > 0:
        return override
    if plan_limit is None:
        return DEFAULT_CONCURRENT_BUILDS
    (limit,) = plan_limit
    return UNLIMITED_CONCURRENT_BUILDS if limit is None else max(1, int(limit))


# The run, its pipeline's policy and config, whether the project has a repository, the
# organization's settings, the stages in order, the plan's build limit and its log and disk
# limits (core/runs/run_limits.py), in one round trip.
# The organization's concurrent-builds limit: the live subscription's plan wins over the free
# plan. `{org}` is the column naming the organization (a constant of this module, never input).
_LIMIT_LATERAL = """
LEFT JOIN LATERAL (
    SELECT true AS found, limit_value FROM (
        SELECT pf.limit_value, 0 AS rank
        FROM plan_features pf JOIN subscriptions sub ON sub.plan_id = pf.plan_id
        WHERE sub.organization_id = {org} AND sub.status = ANY($2::text[])
          AND pf.feature_key = 'concurrent_builds'
        UNION ALL
        SELECT pf.limit_value, 1
        FROM plan_features pf JOIN plans pl ON pl.id = pf.plan_id
        WHERE pl.slug = 'free' AND pf.feature_key = 'concurrent_builds'
        ORDER BY rank LIMIT 1
    ) ranked
) lim"""

_PLAN = """
SELECT r.run_number, r.pipeline_id, r.project_id, r.organization_id, r.branch, r.commit_sha,
       r.status, r.metadata, r.reuse_from_run_id, p.retry_policy, p.config, o.settings,
       EXISTS (SELECT 1 FROM repositories repo WHERE repo.project_id = r.project_id),
       COALESCE((SELECT jsonb_agg(to_jsonb(s) ORDER BY s.position, s.name)
                 FROM pipeline_stages s WHERE s.pipeline_id = r.pipeline_id), '[]'::jsonb),
       lim.found, lim.limit_value, {run_limits},
       (SELECT pr.config ->> 'root_directory' FROM projects pr WHERE pr.id = r.project_id)
FROM pipeline_runs r
JOIN pipelines p ON p.id = r.pipeline_id
LEFT JOIN organizations o ON o.id = r.organization_id
{limit} ON r.organization_id IS NOT NULL
WHERE r.id = $1
""".replace("{limit}", _LIMIT_LATERAL.format(org="r.organization_id")).replace(
    "{run_limits}", plan_limits_sql("r.organization_id")
)

# An organization's limit as it stands now (the same resolution as _PLAN's): read again where a
# claim is made, so a plan change applies to runs that were queued before it.
_ORGANIZATION_LIMIT = """
SELECT o.settings, lim.found, lim.limit_value
FROM organizations o
{limit} ON true
WHERE o.id = $1
""".format(limit=_LIMIT_LATERAL.format(org="o.id"))


async def slot_limit_for_key(conn: asyncpg.Connection, key: str, fallback: int) -> int:
    """The current build-slot limit of the organization behind a slot key (`fallback` for a
    project without an organization, or an organization that no longer exists)."""
    try:
        organization_id = uuid.UUID(key)
    except ValueError:
        return fallback
    row = await conn.fetchrow(_ORGANIZATION_LIMIT, organization_id, list(ACTIVE_SUBSCRIPTION))
    if row is None:
        return fallback
    settings, found, limit = row
    return concurrent_builds(organization_id, settings, (limit,) if found else None)


_SOURCE_RUN = "SELECT commit_sha, metadata FROM pipeline_runs WHERE id = $1"
_SUCCEEDED = """
SELECT stage_name, id, reused_from_id, exit_code FROM stage_executions
WHERE run_id = $1 AND status = 'success'
ORDER BY attempt DESC
"""


async def reusable_stages(
    conn: asyncpg.Connection,
    reuse_from_run_id: uuid.UUID | None,
    commit_sha: str | None,
    specs: list[StageSpec],
) -> dict[str, ReusableStage]:
    """Stages that succeeded in the run being re-run, at the same commit with the same spec."""
    if reuse_from_run_id is None:
        return {}
    source = await conn.fetchrow(_SOURCE_RUN, reuse_from_run_id)
    if source is None or source["commit_sha"] != commit_sha:
        return {}
    old_hashes: dict[str, str] = (source["metadata"] or {}).get("stage_spec_hashes", {})
    reusable: dict[str, ReusableStage] = {}
    current = {s.name: s.spec_hash for s in specs}
    for row in await conn.fetch(_SUCCEEDED, reuse_from_run_id):
        name = row["stage_name"]
        if name in reusable or name not in current or old_hashes.get(name) != current[name]:
            continue
        reusable[name] = ReusableStage(
            execution_id=str(row["reused_from_id"] or row["id"]),
            spec_hash=current[name],
            exit_code=row["exit_code"],
        )
    return reusable


async def load_plan(conn: asyncpg.Connection, run_id: str) -> RunPlan | None:
    """The run's plan, or None when the run does not exist. Reads only: the stage hashes a later
    rerun compares against are stored when the run finishes (a rerun needs a finished run)."""
    row = await conn.fetchrow(_PLAN, uuid.UUID(run_id), list(ACTIVE_SUBSCRIPTION))
    if row is None:
        return None
    (
        run_number,
        pipeline_id,
        project_id,
        organization_id,
        branch,
        commit_sha,
        status,
        metadata,
        reuse_from_run_id,
        retry_policy,
        config,
        org_settings,
        has_repository,
        stages,
        plan_found,
        plan_limit,
        limits,
        root_directory,
    ) = row
    pipeline = {"retry_policy": retry_policy, "config": config, "root_directory": root_directory}
    specs = [stage_spec(stage, pipeline) for stage in stages]
    matrices = {s["name"]: m for s in stages if (m := stage_matrix(s)) is not None}
    specs = expand_legs(specs, matrices, spec_hash)
    if (metadata or {}).get("verification_task_id"):
        # A verification run proves the pipeline builds and tests; it deploys nothing.
        for spec in specs:
            if spec.stage_type == "deploy" or spec.deploy_environment_id:
                spec.skip = VERIFICATION_SKIP
    return RunPlan(
        run_id=run_id,
        run_number=run_number,
        pipeline_id=str(pipeline_id),
        project_id=str(project_id),
        organization_id=str(organization_id) if organization_id else None,
        branch=branch,
        commit_sha=commit_sha,
        has_repository=bool(has_repository),
        changed_paths=(metadata or {}).get("changed_paths"),
        stages=specs,
        reusable=await reusable_stages(conn, reuse_from_run_id, commit_sha, specs),
        concurrent_builds=concurrent_builds(
            organization_id, org_settings, (plan_limit,) if plan_found else None
        ),
        status=status,
        limits=run_limits(limits),
    )
