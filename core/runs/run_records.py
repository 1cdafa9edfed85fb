"""Pipeline runs as Postgres rows: marked started (with the operators' workflow_executions row
and the run's variables snapshot) and finished. One statement each."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.runs import build_slots
from core.runs.run_limits import plan_limits_sql, run_limits
from db.models.pipelines import PipelineRun
from workflows.runs_models import RunLimits

# The variables a run's stages see, as stored (secret values still encrypted): the run's own, its
# project's and each of its project's environments' (`r`: the run, `p`: its project), and which
# environments were protected (their secrets are withheld from stages).
_RUN_VARIABLES = """jsonb_build_object(
    'run', r.env_vars_encrypted,
    'project', COALESCE(p.config -> 'environment_variables', '[]'::jsonb),
    'environments', COALESCE(
        (SELECT jsonb_object_agg(e.id::text, e.config -> 'environment_variables')
         FROM environments e
         WHERE e.project_id = r.project_id AND e.config ? 'environment_variables'),
        '{}'::jsonb),
    'protected', COALESCE(
        (SELECT jsonb_agg(e.id::text) FROM environments e
         WHERE e.project_id = r.project_id AND e.is_protected),
        '[]'::jsonb),
    'environment_id', r.metadata ->> 'environment_id')"""

# Marking a run started: the run row and the operators' row. `{GRANTED}` narrows the update
# (nothing, or the claim of the statement that also asks for the run's build slot).
_START_CTES = """
run AS (
    UPDATE pipeline_runs r
    SET status = CASE WHEN r.status = 'queued' THEN 'running' ELSE r.status END,
        started_at = COALESCE(r.started_at, now()), workflow_id = $2, updated_at = now(),
        -- Taken once: a repeated start keeps what the first one saw.
        variables_snapshot = COALESCE(
            r.variables_snapshot,
            (SELECT {RUN_VARIABLES} FROM projects p WHERE p.id = r.project_id)
        )
    WHERE r.id = $1{GRANTED}
    RETURNING r.id, r.organization_id, r.project_id, r.pipeline_id, r.run_number, r.metadata,
              r.variables_snapshot
), operator_row AS (
    INSERT INTO workflow_executions (id, kind, workflow_type, workflow_id, run_id, task_queue,
                                     organization_id, project_id, resource_type, resource_id,
                                     status, memo)
    SELECT gen_random_uuid(), 'pipeline_run', 'PipelineRunWorkflow', $2, $3, $4,
           organization_id, project_id, 'pipeline_run', id, 'running',
           jsonb_build_object('pipeline_id', pipeline_id::text, 'run_number', run_number)
    FROM run
    ON CONFLICT (workflow_id, run_id) DO UPDATE SET
        task_queue = excluded.task_queue, status = excluded.status, memo = excluded.memo,
        updated_at = now()
    RETURNING 1
)
""".replace("{RUN_VARIABLES}", _RUN_VARIABLES)

_MARK_RUN_STARTED = """
WITH {START}
SELECT project_id, metadata, variables_snapshot, {PLAN_LIMITS} FROM run
""".replace("{START}", _START_CTES.replace("{GRANTED}", "")).replace(
    "{PLAN_LIMITS}", plan_limits_sql("run.organization_id")
)

# A build slot claimed (build_slot_acquire, $5 the slot key, $2 the run's workflow, $6 the
# limit, $1 the run: a waiting claim queues at its trigger time) and, when the claim holds one,
# the run marked started, in one round trip. The claim is materialized: the function runs
# exactly once, whether or not the run is started.
_CLAIM_AND_START = """
WITH claim AS MATERIALIZED (SELECT * FROM build_slot_acquire($5, $2, $6, $1)), {START}
SELECT claim.claim_seq, claim.claim_holding, claim.pending_runs, claim.pending_seqs,
       run.id IS NOT NULL, run.project_id, run.metadata, run.variables_snapshot, {PLAN_LIMITS}
FROM claim LEFT JOIN run ON true
""".replace(
    "{START}", _START_CTES.replace("{GRANTED}", " AND (SELECT claim_holding FROM claim)")
).replace("{PLAN_LIMITS}", plan_limits_sql("run.organization_id"))

_FINISH_RUN = """
WITH run AS (
    -- Final: a closed run keeps its status and error whatever a later close says.
    UPDATE pipeline_runs
    SET status = CASE WHEN status IN ('success', 'failed', 'cancelled') THEN status ELSE $2 END,
        error = CASE WHEN status IN ('success', 'failed', 'cancelled') THEN error ELSE $3 END,
        finished_at = COALESCE(finished_at, now()),
        duration_seconds = EXTRACT(EPOCH FROM COALESCE(finished_at, now()) - started_at)::int,
        metadata = metadata || jsonb_build_object('stage_spec_hashes', $8::jsonb),
        variables_snapshot = NULL, updated_at = now()
    WHERE id = $1
    RETURNING id, organization_id, project_id, pipeline_id, status, branch, run_number,
              (metadata -> 'forge') IS NOT NULL AS forge
), unfinished AS (
    UPDATE stage_executions SET status = $4, finished_at = now(), updated_at = now()
    WHERE run_id = $1 AND status IN ('pending', 'queued', 'running')
    RETURNING 1
), operator_row AS (
    UPDATE workflow_executions
    SET status = $5, closed_at = now(), error = $3, updated_at = now()
    WHERE workflow_id = $6 AND run_id = $7 AND closed_at IS NULL
    RETURNING 1
)
SELECT organization_id, project_id, pipeline_id,
       (SELECT COALESCE(SUM(duration_ms), 0) FROM stage_executions
        WHERE run_id = $1 AND reused_from_id IS NULL) AS build_ms,
       status, forge,
       -- The previous finished run on the same pipeline and branch (run.fixed needs it).
       (SELECT earlier.status FROM pipeline_runs earlier
        WHERE earlier.pipeline_id = run.pipeline_id
          AND earlier.branch IS NOT DISTINCT FROM run.branch
          AND earlier.id <> run.id AND earlier.run_number < run.run_number
          AND earlier.status IN ('failed', 'success')
        ORDER BY earlier.run_number DESC LIMIT 1) AS previous_status
FROM run
"""


@dataclass(frozen=True)
class StartedRun:
    project_id: uuid.UUID
    metadata: dict[str, Any]
    variables: dict[str, Any]
    # The plan's limits as they stand when the run starts (a queued run sees a plan change).
    limits: RunLimits = field(default_factory=RunLimits)


@dataclass(frozen=True)
class FinishedRun:
    organization_id: uuid.UUID | None
    project_id: uuid.UUID
    pipeline_id: uuid.UUID
    build_ms: int
    # The final status, whether a forge event started the run (metadata names `forge`), and
    # the status of the previous finished run on its pipeline and branch: what the commit
    # status and the notifications would otherwise each read again.
    status: str | None = None
    forge: bool = True
    previous_status: str | None = None


async def mark_run_started(
    conn: asyncpg.Connection,
    *,
    run_id: str,
    workflow_id: str,
    workflow_run_id: str,
    task_queue: str,
) -> StartedRun | None:
    """`queued` becomes `running` (a later status stays), started_at set once, and the
    operators' workflow_executions row upserted. None when the run does not exist."""
    row = await conn.fetchrow(
        _MARK_RUN_STARTED, uuid.UUID(run_id), workflow_id, workflow_run_id, task_queue
    )
    if row is None:
        return None
    return StartedRun(
        project_id=row[0],
        metadata=row[1] or {},
        variables=row[2] or {},
        limits=run_limits(row[3]),
    )


async def claim_slot_and_start(
    conn: asyncpg.Connection,
    *,
    run_id: str,
    workflow_id: str,
    workflow_run_id: str,
    task_queue: str,
    slot_key: str,
    limit: int,
) -> tuple[build_slots.Claim, list[build_slots.PendingGrant], StartedRun | None]:
    """`build_slots.acquire`, then `mark_run_started` when the claim holds a slot, as one
    statement: the claim, the grants still to deliver to other runs, and the started run (None
    when the claim waits, or when the run does not exist)."""
    row = await conn.fetchrow(
        _CLAIM_AND_START,
        uuid.UUID(run_id),
        workflow_id,
        workflow_run_id,
        task_queue,
        slot_key,
        max(1, limit),
    )
    assert row is not None  # the claim always answers one row
    claim = build_slots.Claim(seq=row[0], holding=row[1])
    pending = build_slots.pending_of(row[2], row[3])
    if not row[4]:
        return claim, pending, None
    started = StartedRun(
        project_id=row[5], metadata=row[6] or {}, variables=row[7] or {}, limits=run_limits(row[8])
    )
    return claim, pending, started


async def finish_run(
    conn: asyncpg.Connection,
    *,
    run_id: str,
    status: str,
    error: str | None,
    unfinished_stage_status: str,
    workflow_status: str,
    workflow_id: str,
    workflow_run_id: str,
    spec_hashes: dict[str, str],
) -> FinishedRun | None:
    """Final status (the first finish time stays), the stage spec hashes a rerun compares against,
    stages left open closed with `unfinished_stage_status`, the operators' row closed; returns
    what the build-minutes record needs. None when the run does not exist."""
    row = await conn.fetchrow(
        _FINISH_RUN,
        uuid.UUID(run_id),
        status,
        error,
        unfinished_stage_status,
        workflow_status,
        workflow_id,
        workflow_run_id,
        json.dumps(spec_hashes),  # the connection's JSONB codec takes text
    )
    if row is None:
        return None
    return FinishedRun(
        organization_id=row[0],
        project_id=row[1],
        pipeline_id=row[2],
        build_ms=int(row[3]),
        status=row[4],
        forge=bool(row[5]),
        previous_status=row[6],
    )


async def set_run_status(session: AsyncSession, run_id: str, **values: Any) -> None:
    await session.execute(
        update(PipelineRun)
        .where(PipelineRun.id == uuid.UUID(run_id))
        .values(**values, updated_at=func.now())
    )
