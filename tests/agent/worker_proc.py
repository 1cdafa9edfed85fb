"""A standalone agent worker process for the crash test:
`python -m tests.agent.worker_proc QUEUE [GATE_FILE]` (with a gate file it imports and connects,
then waits for the file to exist before polling, so a stand-by worker takes over at once).

Settings come from the environment (FORGELINE_*), exactly like worker.py.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from temporalio.worker import Worker

from activities.agent.registration import registration
from activities.deps import WorkerDeps
from db.session import create_engine, create_session_maker
from forgeline.settings import Settings
from forgeline.temporal_client import connect_temporal, workflow_runner


async def main(task_queue: str, gate: Path | None) -> None:
    settings = Settings()
    engine = create_engine(settings)
    client = await connect_temporal(settings)
    reg = registration(WorkerDeps(settings, create_session_maker(engine), client))
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=reg.workflows,
        activities=reg.activities,
        workflow_runner=workflow_runner(),
    )
    while gate is not None and not gate.exists():
        await asyncio.sleep(0.05)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else None))
