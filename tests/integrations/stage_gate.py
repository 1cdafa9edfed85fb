"""Report sequences without a race: the runs' workers start only once the forge has the queued
report, and a stage ends only when the test lets it (it waits for a file the test writes into
the run's workspace), opened once the forge has the running report. A report older than the
run's status is dropped, so without these a loaded machine decides what the forge sees."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio.client import Client

from forgeline.settings import Settings
from tests.runs.helpers import executions, pipeline_worker, wait_for
from tests.runs.sandbox import sandbox_runner

GATE = ".running-reported"
WAIT = f"until [ -e {GATE} ]; do sleep 0.1; done"


async def open_gate(session_maker: Any, settings: Settings, run_id: uuid.UUID) -> None:
    """Let the run's waiting stage end, once it runs (the workspace holds its checkout by then;
    the stage's own timeout bounds the wait)."""

    async def stage_running() -> bool:
        return any(e.status == "running" for e in await executions(session_maker, run_id))

    await wait_for(stage_running, timeout=60)
    (settings.workspaces_dir / str(run_id) / GATE).touch()


@asynccontextmanager
async def run_executor(
    client: Client, settings: Settings, session_maker: Any, task_queue: str, tmp_path: Path
) -> AsyncIterator[None]:
    """The pipelines worker (sandbox runner) on `task_queue`, started when the test says."""
    runner = sandbox_runner(tmp_path / "runner-state")
    try:
        async with pipeline_worker(client, task_queue, settings, session_maker, runner):
            yield
    finally:
        await runner.close()
