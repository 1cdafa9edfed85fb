"""Insight of one project over a window ending now: run success rate, run and stage durations,
queue time, flakiest stages, and the four DORA metrics."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from core.insights import aggregate, rollups
from forgeline.errors import ValidationFailed

WINDOW_PATTERN = re.compile(r"^([1-9][0-9]{0,2})d$")
MAX_WINDOW_DAYS = 365


def parse_window(window: str) -> int:
    """`Nd` with 1 <= N <= 365, as days; anything else is a 422."""
    match = WINDOW_PATTERN.match(window)
    if match is None or int(match.group(1)) > MAX_WINDOW_DAYS:
        raise ValidationFailed("window must be Nd with N from 1 to 365 (for example 30d)")
    return int(match.group(1))


class Percentiles(BaseModel):
    p50: float | None = None
    p95: float | None = None


class PipelineInsight(BaseModel):
    pipeline_id: uuid.UUID
    pipeline_name: str
    runs: int
    succeeded: int
    failed: int
    cancelled: int
    success_rate: float | None
    duration_seconds: Percentiles
    queue_seconds: Percentiles


class StageInsight(BaseModel):
    pipeline_id: uuid.UUID
    stage_name: str
    runs: int
    success_rate: float | None
    duration_ms: Percentiles
    passed_on_retry: int
    failed_then_passed: int

    @property
    def flaky(self) -> int:
        return self.passed_on_retry + self.failed_then_passed


class Dora(BaseModel):
    deployments: int
    deployment_frequency_per_day: float
    lead_time_seconds: Percentiles
    lead_time_mean_seconds: float | None
    change_failure_rate: float | None
    failed_changes: int
    time_to_restore_mean_seconds: float | None
    unrestored_failures: int


class WindowInsights(BaseModel):
    """The metrics of an insight over a window (a project's, or an organization's merged)."""

    window_days: int
    since: datetime
    until: datetime
    runs: int
    success_rate: float | None
    pipelines: list[PipelineInsight]
    stages: list[StageInsight]
    flakiest_stages: list[StageInsight]
    dora: Dora


class ProjectInsights(WindowInsights):
    project_id: uuid.UUID


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _num(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def percentiles(values: list[float | None]) -> Percentiles:
    return Percentiles(
        p50=_num(aggregate.percentile(values, 0.5)), p95=_num(aggregate.percentile(values, 0.95))
    )


def summarize(
    total: aggregate.Aggregate, window_days: int, since: datetime, until: datetime
) -> dict[str, Any]:
    """The insight fields of an aggregate over a window (of a project, or several merged)."""
    pipelines = sorted(
        (
            PipelineInsight(
                pipeline_id=uuid.UUID(pid),
                pipeline_name=p["name"],
                runs=p["total"],
                succeeded=p["succeeded"],
                failed=p["failed"],
                cancelled=p["cancelled"],
                success_rate=ratio(p["succeeded"], p["succeeded"] + p["failed"]),
                duration_seconds=percentiles(p["durations"]),
                queue_seconds=percentiles(p["queue"]),
            )
            for pid, p in total["pipelines"].items()
        ),
        key=lambda p: (p.pipeline_name, str(p.pipeline_id)),
    )
    stages = sorted(
        (
            StageInsight(
                pipeline_id=uuid.UUID(s["pipeline_id"]),
                stage_name=s["stage_name"],
                runs=s["total"],
                success_rate=ratio(s["succeeded"], s["total"]),
                duration_ms=percentiles(s["durations"]),
                passed_on_retry=s["passed_on_retry"],
                failed_then_passed=s["failed_then_passed"],
            )
            for s in total["stages"].values()
        ),
        key=lambda s: (str(s.pipeline_id), s.stage_name),
    )
    flakiest = sorted((s for s in stages if s.flaky), key=lambda s: (-s.flaky, s.stage_name))
    succeeded = sum(p.succeeded for p in pipelines)
    failed = sum(p.failed for p in pipelines)
    return {
        "window_days": window_days,
        "since": since,
        "until": until,
        "runs": sum(p.runs for p in pipelines),
        "success_rate": ratio(succeeded, succeeded + failed),
        "pipelines": pipelines,
        "stages": stages,
        "flakiest_stages": flakiest[:10],
        "dora": dora_of(total, window_days),
    }


def dora_of(total: aggregate.Aggregate, window_days: int) -> Dora:
    dora = total["dora"]
    lead: list[float | None] = dora.get("lead", [])
    restore: list[float | None] = dora.get("restore", [])
    restored = [r for r in restore if r is not None]
    changes = dora["deployments"] + dora["failures"]
    return Dora(
        deployments=dora["deployments"],
        deployment_frequency_per_day=round(dora["deployments"] / window_days, 4),
        lead_time_seconds=Percentiles(p50=_num(aggregate.percentile(lead, 0.5))),
        lead_time_mean_seconds=_num(sum(lead) / len(lead)) if lead else None,  # type: ignore[arg-type]
        change_failure_rate=ratio(dora["failures"], changes),
        failed_changes=dora["failures"],
        time_to_restore_mean_seconds=_num(sum(restored) / len(restored)) if restored else None,
        unrestored_failures=len(restore) - len(restored),
    )


def window_bounds(window_days: int, now: datetime | None = None) -> tuple[datetime, datetime]:
    until = now or datetime.now(UTC)
    return until - timedelta(days=window_days), until


async def project_insights(
    session: AsyncSession, project_id: uuid.UUID, window_days: int, *, now: datetime | None = None
) -> ProjectInsights:
    since, until = window_bounds(window_days, now)
    total = await rollups.window_aggregate(session, project_id, since, until)
    return ProjectInsights(project_id=project_id, **summarize(total, window_days, since, until))
