"""InsightsRollupWorkflow: what the insights rollup Schedule starts; one idempotent pass."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.contracts import operations as contracts
    from workflows.operations_models import InsightsRollupInput, InsightsRollupResult


@workflow.defn(name="InsightsRollupWorkflow")
class InsightsRollupWorkflow:
    @workflow.run
    async def run(self, inp: InsightsRollupInput) -> InsightsRollupResult:
        return await contracts.ROLLUP_INSIGHTS.execute(
            inp,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=5), maximum_attempts=3),
        )
