"""A verified forge delivery becomes pipeline runs: track a pull request, match triggers,
compute changed paths from git when a path filter needs them, start one run per matching
pipeline, record the outcome."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.contracts.integrations import (
        COMPUTE_CHANGED_PATHS,
        MATCH_TRIGGERS,
        RECORD_DELIVERY_OUTCOME,
        RECORD_PULL_REQUEST,
        START_RUNS,
    )
    from workflows.integrations_models import (
        ChangedPaths,
        ChangedPathsInput,
        DeliveryInput,
        DeliveryOutcome,
        StartRunsInput,
    )

BOOKKEEPING_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=20,
)
# A repository that cannot be read leaves path filters matching (git could not tell).
GIT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)


@workflow.defn(name="WebhookDeliveryWorkflow")
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, inp: DeliveryInput) -> DeliveryOutcome:
        try:
            return await self._process(inp)
        except ActivityError as exc:
            # Recorded on the delivery, never dropped silently; the forge can redeliver it.
            await self._record(
                DeliveryOutcome(
                    delivery_row_id=inp.delivery_row_id,
                    status="failed",
                    error=str(exc.cause or exc)[:1000],
                )
            )
            raise

    async def _process(self, inp: DeliveryInput) -> DeliveryOutcome:
        # Tracked before anything starts: the runs' statuses update the row. Executions that
        # began before tracking existed replay without it.
        if inp.event.kind == "pull_request" and workflow.patched("pr-tracking"):
            await RECORD_PULL_REQUEST.execute(
                inp.event,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=BOOKKEEPING_RETRY,
            )
        candidates = await MATCH_TRIGGERS.execute(
            inp.event, start_to_close_timeout=timedelta(seconds=30), retry_policy=BOOKKEEPING_RETRY
        )
        if not candidates.pipeline_ids:
            return await self._record(
                DeliveryOutcome(delivery_row_id=inp.delivery_row_id, status="ignored")
            )
        changed = ChangedPaths()
        if candidates.paths_needed:
            try:
                changed = await COMPUTE_CHANGED_PATHS.execute(
                    ChangedPathsInput(event=inp.event),
                    start_to_close_timeout=timedelta(minutes=5),
                    heartbeat_timeout=timedelta(seconds=30),
                    retry_policy=GIT_RETRY,
                )
            except ActivityError:
                workflow.logger.warning("changed paths unknown; path filters match")
        started = await START_RUNS.execute(
            StartRunsInput(
                event=inp.event,
                pipeline_ids=candidates.pipeline_ids,
                changed=changed,
                delivery_workflow_id=workflow.info().workflow_id,
            ),
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=BOOKKEEPING_RETRY,
        )
        return await self._record(
            DeliveryOutcome(
                delivery_row_id=inp.delivery_row_id,
                status="processed" if started.run_ids else "ignored",
                run_ids=started.run_ids,
            )
        )

    async def _record(self, outcome: DeliveryOutcome) -> DeliveryOutcome:
        await RECORD_DELIVERY_OUTCOME.execute(
            outcome, start_to_close_timeout=timedelta(seconds=30), retry_policy=BOOKKEEPING_RETRY
        )
        return outcome
