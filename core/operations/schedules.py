"""The operations Schedules, created at worker start when missing (idempotent, as the billing
schedule is): a ReconcilerWorkflow pass every `reconciler_interval_seconds` and an
InsightsRollupWorkflow pass every `insights_rollup_seconds`, each skipped while the previous one
still runs."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)

from forgeline.search_attributes import forgeline_search_attributes
from forgeline.settings import Settings
from workflows.insights_rollup import InsightsRollupWorkflow
from workflows.operations_models import (
    INSIGHTS_ROLLUP_WORKFLOW_ID,
    RECONCILER_WORKFLOW_ID,
    InsightsRollupInput,
    ReconcileInput,
)
from workflows.reconciler import ReconcilerWorkflow

ParamT = TypeVar("ParamT")

RECONCILER_SCHEDULE_ID = "forgeline-reconciler"
INSIGHTS_ROLLUP_SCHEDULE_ID = "forgeline-insights-rollup"


def reconciler_schedule(settings: Settings, workflow_id: str = RECONCILER_WORKFLOW_ID) -> Schedule:
    return _pass_schedule(
        settings,
        ReconcilerWorkflow.run,
        ReconcileInput(lookback_seconds=settings.reconciler_lookback_seconds),
        workflow_id=workflow_id,
        kind="reconciler",
        execution_timeout=timedelta(minutes=10),
        every_seconds=settings.reconciler_interval_seconds,
        note="Reflects executions closed outside Forgeline in their runs, deployments and "
        "agent tasks",
    )


async def ensure_reconciler_schedule(
    client: Client, settings: Settings, schedule_id: str = RECONCILER_SCHEDULE_ID
) -> str:
    """Create the schedule when missing; concurrent starts create one (the ID is unique)."""
    schedule = reconciler_schedule(settings, workflow_id=f"{schedule_id}-pass")
    return await _ensure(client, schedule_id, schedule)


def insights_rollup_schedule(
    settings: Settings, workflow_id: str = INSIGHTS_ROLLUP_WORKFLOW_ID
) -> Schedule:
    return _pass_schedule(
        settings,
        InsightsRollupWorkflow.run,
        InsightsRollupInput(),
        workflow_id=workflow_id,
        kind="insights-rollup",
        execution_timeout=timedelta(hours=1),
        every_seconds=settings.insights_rollup_seconds,
        note="Rolls up each active project's insight per day",
    )


async def ensure_insights_rollup_schedule(
    client: Client, settings: Settings, schedule_id: str = INSIGHTS_ROLLUP_SCHEDULE_ID
) -> str:
    """Create the schedule when missing; concurrent starts create one (the ID is unique)."""
    schedule = insights_rollup_schedule(settings, workflow_id=f"{schedule_id}-pass")
    return await _ensure(client, schedule_id, schedule)


def _pass_schedule(
    settings: Settings,
    run: Callable[[Any, ParamT], Awaitable[Any]],
    arg: ParamT,
    *,
    workflow_id: str,
    kind: str,
    execution_timeout: timedelta,
    every_seconds: float,
    note: str,
) -> Schedule:
    """A pass of `run` on the operations queue every `every_seconds`; a pass still running
    makes the next firing pointless, not queued."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            run,
            arg,
            id=workflow_id,
            task_queue=settings.operations_task_queue,
            typed_search_attributes=forgeline_search_attributes(kind),
            execution_timeout=execution_timeout,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=every_seconds))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note=note),
    )


async def _ensure(client: Client, schedule_id: str, schedule: Schedule) -> str:
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(schedule_id, schedule)
    return schedule_id
