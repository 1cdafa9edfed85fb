"""A deployments worker in its own process, so a test can SIGKILL it mid-deploy."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import docker
from temporalio.worker import Worker

from activities.deployments.activities import DeploymentActivities
from activities.deployments.registration import WORKFLOWS
from db.session import create_engine, create_session_maker
from forgeline.settings import Settings
from forgeline.temporal_client import connect_temporal, workflow_runner
from infra.storage import LocalObjectStore


async def main() -> None:
    settings = Settings(
        environment="development",
        database_url=os.environ["FL_DATABASE_URL"],
        temporal_address=os.environ["FL_TEMPORAL_ADDRESS"],
        storage_dir=Path(os.environ["FL_OBJECTS_DIR"]),
        allow_local_repositories=True,
    )
    engine = create_engine(settings)
    client = await connect_temporal(settings)
    activities = DeploymentActivities(
        settings=settings,
        session_maker=create_session_maker(engine),
        temporal=client,
        docker_client=docker.from_env(),
        store=LocalObjectStore(settings.objects_dir),
    )
    worker = Worker(
        client,
        task_queue=os.environ["FL_TASK_QUEUE"],
        workflows=WORKFLOWS,
        activities=activities.all(),
        workflow_runner=workflow_runner(),
    )
    print("worker ready", flush=True)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
