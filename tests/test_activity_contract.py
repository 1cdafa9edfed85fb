"""Typed activity contracts on a real Temporal server: a workflow calls an activity through its
contract and gets the typed output back; the contract's non-retryable errors stop retries
whatever policy the call passes; an unbounded policy is refused; the implementation registers
under the contract's name."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from forgeline.temporal_client import workflow_runner
from workflows.contract import ActivityContract


class Sum(BaseModel):
    numbers: list[int]


class Total(BaseModel):
    total: int


class Refused(Exception):
    pass


ADD = ActivityContract("contract_test.add", Sum, Total, non_retryable=("Refused",))
NOTHING = ActivityContract("contract_test.nothing", Sum, type(None))


class Adder:
    def __init__(self) -> None:
        self.attempts = 0

    @ADD.implement
    async def add(self, inp: Sum) -> Total:
        self.attempts += 1
        if any(n < 0 for n in inp.numbers):
            raise ApplicationError("negative", type="Refused")
        return Total(total=sum(inp.numbers))

    @NOTHING.implement
    async def nothing(self, inp: Sum) -> None:
        return None


POLICY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(milliseconds=10))


@workflow.defn(sandboxed=False)
class AddWorkflow:
    @workflow.run
    async def run(self, numbers: list[int]) -> int:
        total = await ADD.execute(
            Sum(numbers=numbers), start_to_close_timeout=timedelta(seconds=10), retry_policy=POLICY
        )
        await NOTHING.execute(
            Sum(numbers=[]), start_to_close_timeout=timedelta(seconds=10), retry_policy=POLICY
        )
        return total.total


async def _run(client: Client, task_queue: str, adder: Adder, wf: type, *args: object) -> object:
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[AddWorkflow],
        activities=[adder.add, adder.nothing],
        workflow_runner=workflow_runner(),
    ):
        return await client.execute_workflow(
            wf.run,  # type: ignore[attr-defined]
            *args,
            id=f"contract-{uuid.uuid4()}",
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=30),
        )


async def test_a_contract_call_returns_the_typed_output(temporal_client, task_queue) -> None:
    adder = Adder()
    assert await _run(temporal_client, task_queue, adder, AddWorkflow, [1, 2, 3]) == 6
    assert adder.attempts == 1
    assert getattr(Adder.add, "__temporal_activity_definition").name == "contract_test.add"


async def test_the_contracts_non_retryable_errors_are_not_retried(
    temporal_client, task_queue
) -> None:
    adder = Adder()
    with pytest.raises(WorkflowFailureError):
        await _run(temporal_client, task_queue, adder, AddWorkflow, [1, -1])
    assert adder.attempts == 1


def test_the_non_retryable_errors_join_the_callers_policy() -> None:
    merged = ADD.retry_policy(RetryPolicy(maximum_attempts=3, non_retryable_error_types=["X"]))
    assert merged.non_retryable_error_types == ["X", "Refused"]
    assert merged.maximum_attempts == 3
    assert NOTHING.retry_policy(POLICY) is POLICY
    with pytest.raises(ValueError, match="unbounded"):
        ADD.retry_policy(RetryPolicy())
