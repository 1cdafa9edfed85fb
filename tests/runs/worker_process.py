"""A pipelines worker in its own process, for crash tests: `python -m tests.runs.worker_process
TASK_QUEUE` with settings from FORGELINE_* environment variables. Runs until killed."""

from __future__ import annotations

import asyncio
import sys

from temporalio.worker import Worker

from activities.deps import WorkerDeps
from activities.runs.registration import WORKFLOWS, pipeline_activities
from db.session import create_engine, create_session_maker
from forgeline.settings import Settings
from forgeline.temporal_client import connect_temporal, workflow_runner


async def main(task_queue: str) -> None:
    # Control and build activities on one queue: the runs' plans name it as their build queue.
    settings = Settings(build_task_queue=task_queue)
    engine = create_engine(settings)
    client = await connect_temporal(settings)
    deps = WorkerDeps(settings, create_session_maker(engine), client)
    activities, _ = pipeline_activities(deps)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=activities,
        workflow_runner=workflow_runner(settings.workflow_sandbox),
    )
    print("worker ready", flush=True)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
