"""A second baseline for the runs bench: the bare chain, but each activity runs the same no-op
stage process a pipeline stage runs (`true` through the sandbox runner, from its pool of waiting
sandboxes, in a workspace of the chain's own). Nothing else: no rows, no logs, no bookkeeping.

The bare chain (bench/chain_workflow.py) never starts a process; this one shows what a run costs
beyond the process itself. It does not replace the bare chain: both are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

# Passed through the SDK's workflow sandbox (the chain keeps the SDK's defaults, as the bare
# chain does): re-imported per workflow run, they would cost each chain tens of milliseconds.
with workflow.unsafe.imports_passed_through():
    from infra.runners import Runner, StageProcess


class SandboxChainInput(BaseModel):
    steps: int
    workspace: str


class SandboxStepInput(BaseModel):
    value: int
    workspace: str


class SandboxStepOutput(BaseModel):
    value: int
    exit_code: int


class SandboxedStep:
    """The activity: one no-op process through `runner`, as `execute_stage` starts it."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    @activity.defn(name="bench.sandboxed_step")
    async def step(self, data: SandboxStepInput) -> SandboxStepOutput:
        workspace = Path(data.workspace)
        workspace.mkdir(parents=True, exist_ok=True)

        async def discard(_: bytes) -> None:
            return None

        outcome = await self.runner.run(
            StageProcess(
                name=f"fl-chain-{uuid.uuid4().hex[:12]}-{data.value}",
                script="true",
                workspace=workspace,
                root=workspace,
                timeout_seconds=60,
            ),
            discard,
        )
        return SandboxStepOutput(value=data.value + 1, exit_code=outcome.exit_code)


@workflow.defn(name="BenchSandboxChainWorkflow")
class SandboxChainWorkflow:
    @workflow.run
    async def run(self, data: SandboxChainInput) -> int:
        value = 0
        for _ in range(data.steps):
            out = await workflow.execute_activity_method(
                SandboxedStep.step,
                SandboxStepInput(value=value, workspace=data.workspace),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(
                    maximum_attempts=3, non_retryable_error_types=["TypeError"]
                ),
            )
            if out.exit_code != 0:
                raise RuntimeError(f"no-op step exited {out.exit_code}")
            value = out.value
        return value


async def run_sandboxed_chain(
    client: Client, steps: int, task_queue: str, workspaces: Path
) -> None:
    """One chain of `steps` sandboxed no-op activities, each chain in a fresh workspace (as each
    run has its own)."""
    chain_id = uuid.uuid4()
    await client.execute_workflow(
        SandboxChainWorkflow.run,
        SandboxChainInput(steps=steps, workspace=str(workspaces / str(chain_id))),
        id=f"bench-sandbox-chain-{chain_id}",
        task_queue=task_queue,
    )


class SandboxedChains:
    """Sandboxed chains on their own task queue, worked in this process (see sandboxed_chains)."""

    def __init__(self, client: Client, queue: str, workspaces: Path) -> None:
        self.client = client
        self.queue = queue
        self.workspaces = workspaces

    async def one(self, steps: int) -> float:
        """ms from starting one chain of `steps` to its result (as the bare chain is timed)."""
        started = time.perf_counter()
        await run_sandboxed_chain(self.client, steps, self.queue, self.workspaces)
        return (time.perf_counter() - started) * 1000

    async def burst(self, count: int, steps: int) -> float:
        """Seconds for `count` chains of `steps` started at once."""
        started = time.perf_counter()
        await asyncio.gather(
            *(
                run_sandboxed_chain(self.client, steps, self.queue, self.workspaces)
                for _ in range(count)
            )
        )
        return time.perf_counter() - started


@contextlib.asynccontextmanager
async def sandboxed_chains(
    client: Client, runner: Runner, workspaces: Path, max_concurrent_activities: int
) -> AsyncIterator[SandboxedChains]:
    """A worker for sandboxed chains sharing `runner` (and its pool of waiting sandboxes) with
    the runs, bounded to as many concurrent activities as the runs' worker."""
    queue = f"bench-sandbox-chain-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[SandboxChainWorkflow],
        activities=[SandboxedStep(runner).step],
        max_concurrent_activities=max_concurrent_activities,
    ):
        yield SandboxedChains(client, queue, workspaces)
