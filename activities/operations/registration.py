"""Operations task queue: the scheduled reconciler and insights rollup."""

from __future__ import annotations

from activities.deps import Registration, WorkerDeps
from activities.operations.reconcile import ReconcileActivities
from activities.operations.rollups import InsightsRollupActivities
from workflows.insights_rollup import InsightsRollupWorkflow
from workflows.reconciler import ReconcilerWorkflow


def registration(deps: WorkerDeps) -> Registration:
    reconcile = ReconcileActivities(deps.session_maker, deps.temporal)
    rollups = InsightsRollupActivities(deps.session_maker)
    return Registration(
        task_queue=deps.settings.operations_task_queue,
        workflows=[ReconcilerWorkflow, InsightsRollupWorkflow],
        activities=[reconcile.reconcile_closed_executions, rollups.rollup_insights],
    )
