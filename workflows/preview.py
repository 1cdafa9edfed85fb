"""A preview environment's lifetime: torn down when asked (signal) or when its TTL runs out
(durable timer); a new push extends the TTL. A TTL that runs out while a push is deploying to the
preview tears nothing down: the teardown refuses (PreviewInUse) and the lifetime waits again."""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.contracts.deployments import GONE, PREVIEW_IN_USE, TEARDOWN_ENVIRONMENT
    from workflows.deployment_models import PreviewInput, TeardownRequest


TTL_EXPIRED = "ttl expired"


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
            quiet_since = await self._until_ended(inp)
            expired = self._teardown_reason == TTL_EXPIRED
            try:
                await TEARDOWN_ENVIRONMENT.execute(
                    TeardownRequest(
                        environment_id=inp.environment_id,
                        provider=inp.provider,
                        reason=self._teardown_reason or TTL_EXPIRED,
                        quiet_since=quiet_since if expired else None,
                    ),
                    start_to_close_timeout=timedelta(minutes=5),
                    # Bounded (~30 minutes): a teardown that cannot succeed ends visibly.
                    retry_policy=RetryPolicy(
                        maximum_interval=timedelta(minutes=1),
                        maximum_attempts=40,
                        non_retryable_error_types=[*GONE, PREVIEW_IN_USE],
                    ),
                )
            except ActivityError as exc:
                cause = exc.cause
                if not (isinstance(cause, ApplicationError) and cause.type == PREVIEW_IN_USE):
                    raise
                # A push deploys to it: the preview lives on (a teardown asked for meanwhile
                # still happens on the next pass).
                if self._teardown_reason == TTL_EXPIRED:
                    self._teardown_reason = None
                continue
            return self._teardown_reason or TTL_EXPIRED

    async def _until_ended(self, inp: PreviewInput) -> datetime:
        """Wait for a teardown request or the TTL; returns when the last quiet period began."""
        while True:
            self._extended = False
            quiet_since = workflow.now()
            if self._teardown_reason is not None:
                return quiet_since
            try:
                await workflow.wait_condition(
                    lambda: self._teardown_reason is not None or self._extended,
                    timeout=timedelta(seconds=inp.ttl_seconds),
                )
            except TimeoutError:
                self._teardown_reason = TTL_EXPIRED
            if self._teardown_reason is not None:
                return quiet_since
