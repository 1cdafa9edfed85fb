"""The insight queries of one project over [since, until): each bounded by the project's
indexes on runs and deployments."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Per pipeline: outcome counts, run duration and queue time percentiles (finished runs only).
RUNS_SQL = text(
    """
    SELECT r.pipeline_id, p.name AS pipeline_name,
           count(*) AS total,
           count(*) FILTER (WHERE r.status = 'success') AS succeeded,
           count(*) FILTER (WHERE r.status = 'failed') AS failed,
           count(*) FILTER (WHERE r.status = 'cancelled') AS cancelled,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY r.duration_seconds)
               FILTER (WHERE r.status IN ('success', 'failed')) AS duration_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_seconds)
               FILTER (WHERE r.status IN ('success', 'failed')) AS duration_p95,
           percentile_cont(0.5) WITHIN GROUP (
               ORDER BY EXTRACT(EPOCH FROM r.started_at - r.queued_at)) AS queue_p50,
           percentile_cont(0.95) WITHIN GROUP (
               ORDER BY EXTRACT(EPOCH FROM r.started_at - r.queued_at)) AS queue_p95
    FROM pipeline_runs r JOIN pipelines p ON p.id = r.pipeline_id
    WHERE r.project_id = :project_id AND r.created_at >= :since AND r.created_at < :until
      AND r.status IN ('success', 'failed', 'cancelled')
    GROUP BY r.pipeline_id, p.name
    ORDER BY p.name, r.pipeline_id
    """
)
# Per pipeline and stage: the last attempt's outcome and duration (reused stages excluded), and
# flakiness: passed on a retry within the run, or failed in a run and passed in a later run of
# the same pipeline at the same commit.
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
    )
    SELECT a.pipeline_id, a.stage_name,
           count(*) AS total,
           count(*) FILTER (WHERE a.final_status = 'success') AS succeeded,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY a.final_ms) AS duration_p50_ms,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY a.final_ms) AS duration_p95_ms,
           count(*) FILTER (WHERE a.passed AND a.had_failure) AS passed_on_retry,
           count(*) FILTER (
               WHERE NOT a.passed AND EXISTS (
                   SELECT 1 FROM attempts later
                   WHERE later.pipeline_id = a.pipeline_id AND later.stage_name = a.stage_name
                     AND later.commit_sha = a.commit_sha AND later.created_at > a.created_at
                     AND later.passed)
           ) AS failed_then_passed
    FROM attempts a
    GROUP BY a.pipeline_id, a.stage_name
    ORDER BY a.pipeline_id, a.stage_name
    """
)
# Production changes finished in the window (rollbacks are restorations, not changes; previews
# are not production): outcome, lead time from the commit's first run to live, and for each
# failure the time until the environment next had a healthy deployment.
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
    ), healthy AS (
        SELECT c.id, EXTRACT(EPOCH FROM c.finished_at - (
            SELECT min(r.queued_at) FROM pipeline_runs r
            WHERE r.project_id = :project_id AND r.commit_sha = c.commit_sha
        )) AS lead_seconds
        FROM changes c WHERE c.status IN ('active', 'superseded')
    ), failures AS (
        SELECT c.id, EXTRACT(EPOCH FROM (
            SELECT min(n.finished_at) FROM deployments n
            WHERE n.environment_id = c.environment_id AND n.status IN ('active', 'superseded')
              AND n.finished_at > c.failed_at AND n.deleted_at IS NULL
        ) - c.failed_at) AS restore_seconds
        FROM changes c WHERE c.status IN ('failed', 'rolled_back')
    )
    SELECT (SELECT count(*) FROM healthy) AS deployments,
           (SELECT count(*) FROM failures) AS failures,
           (SELECT avg(lead_seconds) FROM healthy) AS lead_mean,
           (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lead_seconds) FROM healthy)
               AS lead_p50,
           (SELECT avg(restore_seconds) FROM failures) AS restore_mean,
           (SELECT count(*) FROM failures WHERE restore_seconds IS NULL) AS unrestored
    """
)


async def insight_rows(
    session: AsyncSession, params: dict[str, Any]
) -> tuple[list[Any], list[Any], Any]:
    runs = list((await session.execute(RUNS_SQL, params)).mappings())
    stages = list((await session.execute(STAGES_SQL, params)).mappings())
    dora = (await session.execute(DORA_SQL, params)).mappings().one()
    return runs, stages, dora
