"""A preview environment's lifetime: torn down when asked (signal) or when its TTL runs out
(durable timer); a new push extends the TTL."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.contracts.deployments import GONE, TEARDOWN_ENVIRONMENT
    from workflows.deployment_models import PreviewInput, TeardownRequest


def preview_workflow_id(environment_id: str) -> str:
    return f"preview-{environment_id}"


@workflow.defn(name="PreviewEnvironmentWorkflow")
class PreviewEnvironmentWorkflow:
    def __init__(self) -> None:
        self._teardown_reason: str | None = None
        self._extended = False

    @workflow.signal
    def teardown(self, reason: str) -> None:
        self._teardown_reason = reason or "requested"

    @workflow.signal
    def extend(self) -> None:
        self._extended = True

    @workflow.run
    async def run(self, inp: PreviewInput) -> str:
        while True:
            self._extended = False
            try:
                await workflow.wait_condition(
                    lambda: self._teardown_reason is not None or self._extended,
                    timeout=timedelta(seconds=inp.ttl_seconds),
                )
            except TimeoutError:
                self._teardown_reason = "ttl expired"
            if self._teardown_reason is not None:
                break
        await TEARDOWN_ENVIRONMENT.execute(
            TeardownRequest(
                environment_id=inp.environment_id,
                provider=inp.provider,
                reason=self._teardown_reason,
            ),
            start_to_close_timeout=timedelta(minutes=5),
            # Bounded (~30 minutes): a teardown that cannot succeed ends visibly.
            retry_policy=RetryPolicy(
                maximum_interval=timedelta(minutes=1),
                maximum_attempts=40,
                non_retryable_error_types=list(GONE),
            ),
        )
        return self._teardown_reason
