"""The operations Schedules, created at worker start when missing (idempotent, as the billing
schedule is): a ReconcilerWorkflow pass every `reconciler_interval_seconds` and an
InsightsRollupWorkflow pass every `insights_rollup_seconds`, each skipped while the previous one
still runs."""

from __future__ import annotations

import contextlib
from datetime import timedelta

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

RECONCILER_SCHEDULE_ID = "forgeline-reconciler"
INSIGHTS_ROLLUP_SCHEDULE_ID = "forgeline-insights-rollup"


def reconciler_schedule(settings: Settings, workflow_id: str = RECONCILER_WORKFLOW_ID) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcilerWorkflow.run,
            ReconcileInput(lookback_seconds=settings.reconciler_lookback_seconds),
            id=workflow_id,
            task_queue=settings.operations_task_queue,
            typed_search_attributes=forgeline_search_attributes("reconciler"),
            execution_timeout=timedelta(minutes=10),
        ),
        spec=ScheduleSpec(
            intervals=[
                ScheduleIntervalSpec(every=timedelta(seconds=settings.reconciler_interval_seconds))
            ]
        ),
        # A pass still running makes the next firing pointless, not queued.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(
            note="Reflects executions closed outside Forgeline in their runs, deployments and "
            "agent tasks"
        ),
    )


async def ensure_reconciler_schedule(
    client: Client, settings: Settings, schedule_id: str = RECONCILER_SCHEDULE_ID
) -> str:
    """Create the schedule when missing; concurrent starts create one (the ID is unique)."""
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(
            schedule_id, reconciler_schedule(settings, workflow_id=f"{schedule_id}-pass")
        )
    return schedule_id


def insights_rollup_schedule(
    settings: Settings, workflow_id: str = INSIGHTS_ROLLUP_WORKFLOW_ID
) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            InsightsRollupWorkflow.run,
            InsightsRollupInput(),
            id=workflow_id,
            task_queue=settings.operations_task_queue,
            typed_search_attributes=forgeline_search_attributes("insights-rollup"),
            execution_timeout=timedelta(hours=1),
        ),
        spec=ScheduleSpec(
            intervals=[
                ScheduleIntervalSpec(every=timedelta(seconds=settings.insights_rollup_seconds))
            ]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note="Rolls up each active project's insight per day"),
    )


async def ensure_insights_rollup_schedule(
    client: Client, settings: Settings, schedule_id: str = INSIGHTS_ROLLUP_SCHEDULE_ID
) -> str:
    """Create the schedule when missing; concurrent starts create one (the ID is unique)."""
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(
            schedule_id, insights_rollup_schedule(settings, workflow_id=f"{schedule_id}-pass")
        )
    return schedule_id
