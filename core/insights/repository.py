"""The insight queries of one project over [since, until), grouped by UTC day: counts and the raw
values percentiles need, so days can be stored as rollups and merged exactly with live days.
Each query is bounded by the project's indexes on runs and deployments."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Per day and pipeline: outcome counts, finished runs' durations and every run's queue time.
RUNS_SQL = text(
    """
    SELECT to_char(date_trunc('day', r.created_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS day,
           r.pipeline_id::text AS pipeline_id, p.name AS pipeline_name,
           count(*) AS total,
           count(*) FILTER (WHERE r.status = 'success') AS succeeded,
           count(*) FILTER (WHERE r.status = 'failed') AS failed,
           count(*) FILTER (WHERE r.status = 'cancelled') AS cancelled,
           coalesce(array_agg(r.duration_seconds::float8) FILTER (
               WHERE r.status IN ('success', 'failed') AND r.duration_seconds IS NOT NULL),
               '{}') AS durations,
           coalesce(array_agg(EXTRACT(EPOCH FROM r.started_at - r.queued_at)::float8) FILTER (
               WHERE r.started_at IS NOT NULL), '{}') AS queue
    FROM pipeline_runs r JOIN pipelines p ON p.id = r.pipeline_id
    WHERE r.project_id = :project_id AND r.created_at >= :since AND r.created_at < :until
      AND r.status IN ('success', 'failed', 'cancelled')
    GROUP BY 1, 2, 3
    """
)
# Per day, pipeline and stage: the last attempt's outcome and duration (reused stages excluded),
# and flakiness: passed on a retry within the run, or failed in a run and passed in a later run
# of the same pipeline at the same commit within the range (counted on the failing run's day).
STAGES_SQL = text(
    """
    WITH runs AS (
        SELECT id, pipeline_id, commit_sha, created_at FROM pipeline_runs
        WHERE project_id = :project_id AND created_at >= :since AND created_at < :until
    ), attempts AS (
        SELECT s.run_id, s.stage_name, r.pipeline_id, r.commit_sha, r.created_at,
               bool_or(s.status = 'success') AS passed,
               bool_or(s.status IN ('failed', 'timed_out')) AS had_failure,
               (array_agg(s.status ORDER BY s.attempt DESC))[1] AS final_status,
               (array_agg(s.duration_ms ORDER BY s.attempt DESC))[1] AS final_ms
        FROM stage_executions s JOIN runs r ON r.id = s.run_id
        WHERE s.reused_from_id IS NULL AND s.status NOT IN ('skipped', 'pending', 'queued')
        GROUP BY s.run_id, s.stage_name, r.pipeline_id, r.commit_sha, r.created_at
    ), marked AS (
        SELECT a.*, coalesce(bool_or(a.passed) OVER (
                   PARTITION BY a.pipeline_id, a.stage_name, a.commit_sha
                   ORDER BY a.created_at, a.run_id
                   ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), false) AS passed_later
        FROM attempts a
    )
    SELECT to_char(date_trunc('day', m.created_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS day,
           m.pipeline_id::text AS pipeline_id, m.stage_name,
           count(*) AS total,
           count(*) FILTER (WHERE m.final_status = 'success') AS succeeded,
           coalesce(array_agg(m.final_ms::float8) FILTER (WHERE m.final_ms IS NOT NULL), '{}')
               AS durations,
           count(*) FILTER (WHERE m.passed AND m.had_failure) AS passed_on_retry,
           count(*) FILTER (
               WHERE NOT m.passed AND m.commit_sha IS NOT NULL AND m.passed_later
           ) AS failed_then_passed
    FROM marked m
    GROUP BY 1, 2, 3
    """
)
# Per day of finishing, production changes (rollbacks are restorations, not changes; previews are
# not production): lead time from the commit's first run to live for the healthy ones, and for
# each failure the time until the environment next had a healthy deployment (NULL: not yet).
DORA_SQL = text(
    """
    WITH changes AS (
        SELECT d.id, d.environment_id, d.status, d.commit_sha, d.finished_at,
               coalesce(d.rolled_back_at, d.finished_at) AS failed_at
        FROM deployments d JOIN environments e ON e.id = d.environment_id
        WHERE d.project_id = :project_id AND e.env_type = 'production' AND NOT d.is_preview
          AND d.rollback_of_id IS NULL AND d.deleted_at IS NULL
          AND d.finished_at >= :since AND d.finished_at < :until
          AND d.status IN ('active', 'superseded', 'failed', 'rolled_back')
    ), first_seen AS (
        SELECT r.commit_sha, min(r.queued_at) AS at FROM pipeline_runs r
        WHERE r.project_id = :project_id
          AND r.commit_sha IN (SELECT commit_sha FROM changes WHERE commit_sha IS NOT NULL)
        GROUP BY r.commit_sha
    ), healthy_at AS (
        SELECT n.environment_id, n.finished_at FROM deployments n
        WHERE n.environment_id IN (SELECT environment_id FROM changes)
          AND n.status IN ('active', 'superseded') AND n.deleted_at IS NULL
          AND n.finished_at >= :since
    )
    SELECT to_char(date_trunc('day', c.finished_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS day,
           count(*) FILTER (WHERE c.status IN ('active', 'superseded')) AS deployments,
           count(*) FILTER (WHERE c.status IN ('failed', 'rolled_back')) AS failures,
           coalesce(array_agg(EXTRACT(EPOCH FROM c.finished_at - f.at)::float8)
               FILTER (WHERE c.status IN ('active', 'superseded')), '{}') AS lead,
           coalesce(array_agg(EXTRACT(EPOCH FROM (
               SELECT min(h.finished_at) FROM healthy_at h
               WHERE h.environment_id = c.environment_id AND h.finished_at > c.failed_at)
               - c.failed_at)::float8)
               FILTER (WHERE c.status IN ('failed', 'rolled_back')), '{}') AS restore
    FROM changes c LEFT JOIN first_seen f ON f.commit_sha = c.commit_sha
    GROUP BY 1
    """
)


async def day_rows(
    session: AsyncSession, params: dict[str, Any]
) -> tuple[list[Any], list[Any], list[Any]]:
    runs = list((await session.execute(RUNS_SQL, params)).mappings())
    stages = list((await session.execute(STAGES_SQL, params)).mappings())
    dora = list((await session.execute(DORA_SQL, params)).mappings())
    return runs, stages, dora
