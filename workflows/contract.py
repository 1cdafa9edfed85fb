"""Typed activity contracts: one declaration per activity (name, input, output, non-retryable
errors) that workflows call and activity classes implement, so both sides are checked by mypy.

Pure: importable inside the workflow sandbox (temporalio and the standard library only).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Generic, TypedDict, TypeVar, Unpack

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")
SelfT = TypeVar("SelfT")


class ActivityOptions(TypedDict, total=False):
    """How one call of an activity runs (Temporal's options beside its retry policy)."""

    start_to_close_timeout: timedelta | None
    schedule_to_close_timeout: timedelta | None
    schedule_to_start_timeout: timedelta | None
    heartbeat_timeout: timedelta | None
    task_queue: str | None
    cancellation_type: ActivityCancellationType
    activity_id: str | None
    summary: str | None


@dataclass(frozen=True)
class ActivityContract(Generic[InputT, OutputT]):
    """One activity as both sides see it.

    `name` is the registered activity type: it is part of recorded histories, so it never
    changes once released. `non_retryable` names the error types that must not be retried
    whatever retry policy a call passes.
    """

    name: str
    input_type: type[InputT]
    output_type: type[OutputT]
    non_retryable: tuple[str, ...] = ()

    def implement(
        self, fn: Callable[[SelfT, InputT], Awaitable[OutputT]]
    ) -> Callable[[SelfT, InputT], Awaitable[OutputT]]:
        """Decorate an activity method as this contract's implementation."""
        return activity.defn(name=self.name)(fn)

    def retry_policy(self, base: RetryPolicy) -> RetryPolicy:
        """`base` with this contract's non-retryable errors added. Every call names a policy
        with a bounded number of attempts (the server's default retries without end)."""
        if base.maximum_attempts <= 0:
            raise ValueError(f"activity {self.name!r} called with unbounded retries")
        known = base.non_retryable_error_types or ()
        extra = [e for e in self.non_retryable if e not in known]
        if not extra:
            return base
        return replace(base, non_retryable_error_types=[*known, *extra])

    async def execute(
        self, arg: InputT, *, retry_policy: RetryPolicy, **options: Unpack[ActivityOptions]
    ) -> OutputT:
        """Run the activity from a workflow and return its typed result."""
        return await self.start(arg, retry_policy=retry_policy, **options)

    async def execute_local(
        self,
        arg: InputT,
        *,
        start_to_close_timeout: timedelta | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        retry_policy: RetryPolicy,
        local_retry_threshold: timedelta | None = None,
        cancellation_type: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL,
        activity_id: str | None = None,
    ) -> OutputT:
        """Run the activity as a local activity (short bookkeeping: no server round trip)."""
        result: OutputT = await workflow.execute_local_activity(
            self.name,
            arg,
            result_type=self._result_type(),
            start_to_close_timeout=start_to_close_timeout,
            schedule_to_close_timeout=schedule_to_close_timeout,
            retry_policy=self.retry_policy(retry_policy),
            local_retry_threshold=local_retry_threshold,
            cancellation_type=cancellation_type,
            activity_id=activity_id,
        )
        return result

    def start(
        self, arg: InputT, *, retry_policy: RetryPolicy, **options: Unpack[ActivityOptions]
    ) -> workflow.ActivityHandle[OutputT]:
        """Start the activity without waiting (to race it against a signal or a timer)."""
        handle: workflow.ActivityHandle[OutputT] = workflow.start_activity(
            self.name,
            arg,
            result_type=self._result_type(),
            retry_policy=self.retry_policy(retry_policy),
            **options,
        )
        return handle

    def _result_type(self) -> type | None:
        output: type = self.output_type
        return None if output is type(None) else output
