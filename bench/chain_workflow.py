"""The baseline's workload: a workflow that chains N trivial activities, nothing else."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy


class ChainInput(BaseModel):
    steps: int


class ChainOutput(BaseModel):
    steps: int
    total: int


class StepInput(BaseModel):
    value: int


class StepOutput(BaseModel):
    value: int


@activity.defn(name="bench.increment")
async def increment(data: StepInput) -> StepOutput:
    return StepOutput(value=data.value + 1)


@workflow.defn(name="BenchChainWorkflow")
class ChainWorkflow:
    @workflow.run
    async def run(self, data: ChainInput) -> ChainOutput:
        value = 0
        for _ in range(data.steps):
            out = await workflow.execute_activity(
                increment,
                StepInput(value=value),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(
                    maximum_attempts=3, non_retryable_error_types=["TypeError"]
                ),
            )
            value = out.value
        return ChainOutput(steps=data.steps, total=value)
