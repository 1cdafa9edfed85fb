"""The action of a pipeline's Temporal Schedule: start one run of the pipeline (trigger=schedule)
through the run service. The firing's workflow execution keeps a retried start to one run."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.contracts.integrations import START_SCHEDULED_RUN
    from workflows.integrations_models import ScheduledRun, ScheduledRunInput

START_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=20,
)


@workflow.defn(name="ScheduledRunWorkflow")
class ScheduledRunWorkflow:
    @workflow.run
    async def run(self, inp: ScheduledRunInput) -> ScheduledRun:
        info = workflow.info()
        # The ID holds the fire time to the second: two triggers within one second share it.
        firing_id = f"{info.workflow_id}/{info.first_execution_run_id}"
        firing = inp.model_copy(update={"firing_id": firing_id})
        return await START_SCHEDULED_RUN.execute(
            firing, start_to_close_timeout=timedelta(minutes=1), retry_policy=START_RETRY
        )
