"""A run's plan limits (`plan_features`): log bytes kept per stage attempt and the disk one run
may take (its workspace and its stages' log spools together).

Read inside the statements that already load or start a run (no round trip of their own): the
live subscription's plan, else the free plan, as for the build-slot limit. A value a plan does
not state, switches off, or states out of range (zero, absurd) leaves the operator's cap.
The effective cap is the smallest of the operator's, the plan's and the pipeline's own.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.runners.disk_pacing import watch_usage
from infra.runners.sandbox_workspace import run_usage, workspace_usage
from workflows.runs_models import RunLimits

LOG_FEATURE = "stage_log_max_bytes"
DISK_FEATURE = "run_disk_mb"
# Below these a plan value is a mistake, not a limit (the operator's setting has the same floor).
MIN_LOG_BYTES = 4096
MIN_DISK_MB = 16
# The plan's `limit_value` column is 32-bit: anything at its edge is "as much as possible".
MAX_FEATURE_VALUE = 2**31 - 1

# `{org}` names the organization column (a constant of the caller's, never input). The plan's
# value per key: the live subscription's plan first, then the free plan's. A switched-off
# feature reads as NULL (no plan cap).
_ACTIVE = "('trialing', 'active', 'past_due')"
PLAN_LIMITS_SQL = f"""(
    SELECT jsonb_object_agg(feature_key, limit_value) FROM (
        SELECT DISTINCT ON (feature_key) feature_key, limit_value FROM (
            SELECT pf.feature_key, CASE WHEN pf.enabled THEN pf.limit_value END AS limit_value,
                   0 AS rank
            FROM plan_features pf JOIN subscriptions sub ON sub.plan_id = pf.plan_id
            WHERE sub.organization_id = {{org}} AND sub.status IN {_ACTIVE}
              AND pf.feature_key IN ('{LOG_FEATURE}', '{DISK_FEATURE}')
            UNION ALL
            SELECT pf.feature_key, CASE WHEN pf.enabled THEN pf.limit_value END, 1
            FROM plan_features pf JOIN plans pl ON pl.id = pf.plan_id
            WHERE pl.slug = 'free' AND pf.feature_key IN ('{LOG_FEATURE}', '{DISK_FEATURE}')
        ) ranked
        ORDER BY feature_key, rank
    ) features
)"""  # noqa: S608 (constants only)


def plan_limits_sql(org_column: str) -> str:
    return PLAN_LIMITS_SQL.replace("{org}", org_column)


def _value(raw: Any, floor: int) -> int | None:
    if type(raw) is not int or raw < floor or raw >= MAX_FEATURE_VALUE:
        return None
    return raw


def run_limits(raw: Any) -> RunLimits:
    """The plan's limits from the statement's JSON (a dict, its text, or NULL); whatever is not
    a sane positive integer is ignored."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if not isinstance(raw, dict):
        raw = {}
    return RunLimits(
        log_max_bytes=_value(raw.get(LOG_FEATURE), MIN_LOG_BYTES),
        disk_mb=_value(raw.get(DISK_FEATURE), MIN_DISK_MB),
    )


def smallest(*caps: int | None) -> int | None:
    present = [cap for cap in caps if cap is not None and cap > 0]
    return min(present) if present else None


def stage_log_limit(operator: int, plan: RunLimits | None, pipeline: int | None) -> int:
    """Log bytes one stage attempt keeps: the operator's cap, lowered by the plan and by the
    pipeline, never raised."""
    return smallest(operator, plan.log_max_bytes if plan else None, pipeline) or operator


def run_disk_mb(operator: int, plan: RunLimits | None) -> int:
    """Disk one run may take, workspace and log spools together."""
    return smallest(operator, plan.disk_mb if plan else None) or operator


def run_spool_dir(data_dir: Path, run_id: str) -> Path:
    """Where a run's stage attempts spool their logs (counted in the run's disk)."""
    return data_dir / "spool" / run_id


def run_disk_usage(workspace: Path, spool_dir: Path, limit: int) -> int:
    """Bytes the run's workspace (with the sandbox's home and /tmp beside it) and log spools
    take (counting stops early past `limit`)."""
    used = run_usage(workspace, limit)
    if used > limit:
        return used
    return used + workspace_usage(spool_dir, limit - used)


def disk_quota_marker(limit_mb: int) -> str:
    # Starts like the runners' own disk line: classified the same way (the pipeline's limit).
    return (
        "forgeline: stage stopped: its workspace exceeded the disk limit of the run: its "
        f"workspace and logs together reached {limit_mb} MB (the plan's run disk quota, "
        "FORGELINE_BUILD_DISK_MB at most)"
    )


@dataclass
class RunDiskWatch:
    """Calls `on_over` once the run's workspace and spools pass `limit_mb` (checked every
    `every` seconds in a thread: a huge tree never blocks the event loop)."""

    workspace: Path
    spool_dir: Path
    limit_mb: int
    on_over: Callable[[], None]
    every: float = 1.0
    over: bool = False

    async def watch(self) -> None:
        limit = self.limit_mb * 1024 * 1024
        spool = self.spool_dir
        # The workspace's walk is shared with the run's other watchers (and paced by its cost);
        # the spools are this watcher's own.
        await watch_usage(
            self.workspace, limit, self.every, run_usage, lambda room: workspace_usage(spool, room)
        )
        self.over = True
        self.on_over()


def remove_empty_spool_dir(spool_dir: Path) -> None:
    """A finished run leaves no spool directory behind (its attempts removed their files)."""
    with contextlib.suppress(OSError):
        os.rmdir(spool_dir)
