"""One project's insight aggregates per UTC day, as JSON-able dicts: counts plus the raw values
percentiles need, so stored days (rollups) and live days merge into exact window answers."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.insights import repository

Aggregate = dict[str, Any]


def empty() -> Aggregate:
    return {
        "pipelines": {},
        "stages": {},
        "dora": {"deployments": 0, "failures": 0, "lead": [], "restore": []},
    }


def _add_counts(
    into: dict[str, Any], row: Any, counts: Iterable[str], lists: Iterable[str]
) -> None:
    for name in counts:
        into[name] = into.get(name, 0) + int(row[name])
    for name in lists:
        into[name] = [*into.get(name, []), *row[name]]


async def by_day(
    session: AsyncSession, project_id: uuid.UUID, since: datetime, until: datetime
) -> dict[str, Aggregate]:
    """The project's aggregates of each UTC day with activity in [since, until)."""
    params = {"project_id": project_id, "since": since, "until": until}
    runs, stages, dora = await repository.day_rows(session, params)
    days: dict[str, Aggregate] = {}
    for row in runs:
        pipelines = days.setdefault(row["day"], empty())["pipelines"]
        entry = pipelines.setdefault(row["pipeline_id"], {"name": row["pipeline_name"]})
        _add_counts(
            entry, row, ("total", "succeeded", "failed", "cancelled"), ("durations", "queue")
        )
    for row in stages:
        stage_map = days.setdefault(row["day"], empty())["stages"]
        entry = stage_map.setdefault(
            f"{row['pipeline_id']}/{row['stage_name']}",
            {"pipeline_id": row["pipeline_id"], "stage_name": row["stage_name"]},
        )
        _add_counts(
            entry,
            row,
            ("total", "succeeded", "passed_on_retry", "failed_then_passed"),
            ("durations",),
        )
    for row in dora:
        _add_counts(
            days.setdefault(row["day"], empty())["dora"],
            row,
            ("deployments", "failures"),
            ("lead", "restore"),
        )
    return days


def merge(aggregates: Iterable[Aggregate]) -> Aggregate:
    total = empty()
    for agg in aggregates:
        for pid, entry in agg["pipelines"].items():
            into = total["pipelines"].setdefault(pid, {"name": entry["name"]})
            _add_counts(
                into, entry, ("total", "succeeded", "failed", "cancelled"), ("durations", "queue")
            )
        for key, entry in agg["stages"].items():
            into = total["stages"].setdefault(
                key, {"pipeline_id": entry["pipeline_id"], "stage_name": entry["stage_name"]}
            )
            _add_counts(
                into,
                entry,
                ("total", "succeeded", "passed_on_retry", "failed_then_passed"),
                ("durations",),
            )
        _add_counts(total["dora"], agg["dora"], ("deployments", "failures"), ("lead", "restore"))
    return total


def percentile(values: Iterable[float | None], q: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
