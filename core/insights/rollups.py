"""Daily insight rollups in `system_metrics`, so a project's insight over a long window reads one
row per active day instead of every run: rows `insights/project_day` (one per project and UTC
day with activity, `recorded_at` = the day) and `insights/rollup_watermark` (the days
[from, through) that are rolled up for the project: a day in that range without a row had no
activity). Days outside it, and today, are computed live and merged exactly."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.insights import aggregate
from db.models.operations import SystemMetric
from db.session import session_scope

CATEGORY = "insights"
DAY_METRIC = "project_day"
WATERMARK_METRIC = "rollup_watermark"
# A project rolled up for the first time gets at most this much history.
BACKFILL_DAYS = 365

# Projects with runs created or production changes finished since :since, and projects with
# runs that were never rolled up (their first pass backfills them).
ACTIVE_PROJECTS_SQL = text(
    """
    SELECT DISTINCT project_id, organization_id FROM pipeline_runs WHERE created_at >= :since
    UNION
    SELECT DISTINCT project_id, organization_id FROM deployments WHERE finished_at >= :since
    UNION
    SELECT p.id, p.organization_id FROM projects p
    WHERE EXISTS (SELECT 1 FROM pipeline_runs r WHERE r.project_id = p.id)
      AND NOT EXISTS (
          SELECT 1 FROM system_metrics m
          WHERE m.metric_category = 'insights' AND m.metric_name = 'rollup_watermark'
            AND m.dimensions @> jsonb_build_object('project_id', p.id::text))
    """
)


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


@dataclass(frozen=True)
class Watermark:
    start: date
    through: date


def _of_project(project_id: uuid.UUID, name: str) -> Any:
    return (
        (SystemMetric.metric_category == CATEGORY)
        & (SystemMetric.metric_name == name)
        & SystemMetric.dimensions.contains({"project_id": str(project_id)})
    )


async def read_watermark(session: AsyncSession, project_id: uuid.UUID) -> Watermark | None:
    value = (
        await session.execute(
            select(SystemMetric.json_value).where(_of_project(project_id, WATERMARK_METRIC))
        )
    ).scalar_one_or_none()
    if not value:
        return None
    return Watermark(date.fromisoformat(value["from"]), date.fromisoformat(value["through"]))


async def read_days(
    session: AsyncSession, project_id: uuid.UUID, start: date, end: date
) -> list[aggregate.Aggregate]:
    rows = await session.execute(
        select(SystemMetric.json_value).where(
            _of_project(project_id, DAY_METRIC),
            SystemMetric.recorded_at >= day_start(start),
            SystemMetric.recorded_at < day_start(end),
        )
    )
    return [value for (value,) in rows if value]


async def rollup_project(
    session: AsyncSession,
    project_id: uuid.UUID,
    organization_id: uuid.UUID | None,
    *,
    today: date,
    horizon_days: int,
) -> int:
    """Recompute the project's days from the watermark (at least `horizon_days` back, so late
    restores and reruns are seen) up to today, replacing their rows; returns the days stored.
    Serialized per project, so concurrent passes store each day once."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"insights:{project_id}"}
    )
    mark = await read_watermark(session, project_id)
    start = (
        today - timedelta(days=BACKFILL_DAYS)
        if mark is None
        else min(today - timedelta(days=horizon_days), mark.through)
    )
    days = await aggregate.by_day(session, project_id, day_start(start), day_start(today))
    await session.execute(
        delete(SystemMetric).where(
            _of_project(project_id, DAY_METRIC),
            SystemMetric.recorded_at >= day_start(start),
            SystemMetric.recorded_at < day_start(today),
        )
    )
    await session.execute(delete(SystemMetric).where(_of_project(project_id, WATERMARK_METRIC)))
    dims = {"project_id": str(project_id)}
    rows: list[dict[str, Any]] = [
        {
            "metric_category": CATEGORY,
            "metric_name": DAY_METRIC,
            "metric_type": "gauge",
            "aggregation_period": "day",
            "dimensions": dims,
            "organization_id": organization_id,
            "json_value": agg,
            "recorded_at": day_start(date.fromisoformat(day)),
            "source_component": "insights-rollup",
        }
        for day, agg in days.items()
    ]
    rows.append(
        {
            "metric_category": CATEGORY,
            "metric_name": WATERMARK_METRIC,
            "metric_type": "gauge",
            "aggregation_period": "instant",
            "dimensions": dims,
            "organization_id": organization_id,
            "json_value": {
                "from": (min(start, mark.start) if mark else start).isoformat(),
                "through": today.isoformat(),
            },
            "recorded_at": datetime.now(UTC),
            "source_component": "insights-rollup",
        }
    )
    await session.execute(insert(SystemMetric), rows)
    return len(days)


async def rollup_active_projects(
    session_maker: async_sessionmaker[AsyncSession],
    *,
    now: datetime | None = None,
    horizon_days: int = 3,
    on_project: Callable[[], object] | None = None,
) -> int:
    """One pass: every project active within the horizon, one transaction each; returns how
    many projects were rolled up. Idempotent."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    since = day_start(today - timedelta(days=horizon_days))
    async with session_maker() as session:
        projects = list(await session.execute(ACTIVE_PROJECTS_SQL, {"since": since}))
    for project_id, organization_id in projects:
        if on_project is not None:
            on_project()
        async with session_scope(session_maker) as session:
            await rollup_project(
                session, project_id, organization_id, today=today, horizon_days=horizon_days
            )
    return len(projects)


async def window_aggregate(
    session: AsyncSession, project_id: uuid.UUID, since: datetime, until: datetime
) -> aggregate.Aggregate:
    """The project's aggregate over [since, until): rolled-up days from their rows, the rest
    (edges, today, days never rolled up) live."""
    mark = await read_watermark(session, project_id)
    first_full = (since + timedelta(days=1) - timedelta(microseconds=1)).astimezone(UTC).date()
    last_full = until.astimezone(UTC).date()
    parts: list[aggregate.Aggregate] = []
    if mark is not None:
        start, end = max(first_full, mark.start), min(last_full, mark.through)
        if start < end:
            parts.extend(await read_days(session, project_id, start, end))
            live = [(since, day_start(start)), (day_start(end), until)]
            for a, b in live:
                if a < b:
                    parts.extend((await aggregate.by_day(session, project_id, a, b)).values())
            return aggregate.merge(parts)
    parts.extend((await aggregate.by_day(session, project_id, since, until)).values())
    return aggregate.merge(parts)
