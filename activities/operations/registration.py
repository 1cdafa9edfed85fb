"""Operations task queue: the scheduled reconciler's workflow and activity."""

from __future__ import annotations

from activities.deps import Registration, WorkerDeps
from activities.operations.reconcile import ReconcileActivities
from workflows.reconciler import ReconcilerWorkflow


def registration(deps: WorkerDeps) -> Registration:
    reconcile = ReconcileActivities(deps.session_maker, deps.temporal)
    return Registration(
        task_queue=deps.settings.operations_task_queue,
        workflows=[ReconcilerWorkflow],
        activities=[reconcile.reconcile_closed_executions],
    )
