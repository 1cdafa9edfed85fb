"""ReconcilerWorkflow: what the reconciler Schedule starts; one idempotent pass per firing."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.contracts import operations as contracts
    from workflows.operations_models import ReconcileInput, ReconcileResult


@workflow.defn(name="ReconcilerWorkflow")
class ReconcilerWorkflow:
    @workflow.run
    async def run(self, inp: ReconcileInput) -> ReconcileResult:
        return await contracts.RECONCILE_CLOSED_EXECUTIONS.execute(
            inp,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(minutes=1),
            # The next firing starts a fresh pass: a few tries are enough.
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3),
        )
