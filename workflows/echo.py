"""EchoWorkflow: a diagnostics round trip proving the worker, data converter and server agree."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

# Served by every worker process (worker.py), so a smoke check needs no domain code.
DIAGNOSTICS_TASK_QUEUE = "diagnostics"


class EchoInput(BaseModel):
    message: str
    repeat: int = 1
    tags: list[str] = []


class EchoOutput(BaseModel):
    message: str
    echoed_by: str
    tags: list[str] = []


@activity.defn(name="diagnostics.echo")
async def echo_activity(data: EchoInput) -> EchoOutput:
    return EchoOutput(
        message=" ".join([data.message] * data.repeat),
        echoed_by=activity.info().task_queue,
        tags=data.tags,
    )


@workflow.defn(name="EchoWorkflow")
class EchoWorkflow:
    @workflow.run
    async def run(self, data: EchoInput) -> EchoOutput:
        return await workflow.execute_activity(
            echo_activity,
            data,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=["ValueError"]),
        )
