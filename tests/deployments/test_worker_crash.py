"""Kill the worker process mid-deploy: a new worker finishes it with exactly one container serving
and no orphans (deterministic container names let retried activities find their predecessors)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from db.models.deployments import DeploymentContainer
from infra.deploy_containers import DockerReleaser
from tests.deployments.helpers import (
    get_app,
    make_activities,
    make_environment,
    org_sources,
    running_worker,
    start_deployment,
    wait_status,
)
from tests.deployments.images import HEALTHY, write_context
from tests.factories import make_org
from workflows.deployment_models import DeploymentSource

ROOT = Path(__file__).resolve().parents[2]


async def test_worker_killed_mid_deploy_leaves_one_container(
    docker,
    settings,
    database_url,
    temporal_address,
    session_maker,
    temporal_client,
    task_queue,
    tmp_path: Path,
):
    org = await make_org(session_maker)
    sources = org_sources(settings, org.org_id)
    # Slow enough verification (8 passes, 0.5 s apart) that the kill lands inside it.
    _, env_id = await make_environment(
        session_maker,
        org.org_id,
        config={"health_check_passes": 8, "health_check_interval_seconds": 0.5},
    )
    env = {
        **os.environ,
        "FL_DATABASE_URL": database_url,
        "FL_TEMPORAL_ADDRESS": temporal_address,
        "FL_TASK_QUEUE": task_queue,
        "FL_OBJECTS_DIR": str(settings.objects_dir),
        "FORGELINE_DATA_DIR": str(settings.data_dir),
        "FORGELINE_PROXY_ADMIN_URL": settings.proxy_admin_url,
        "FORGELINE_PROXY_HTTP_PORT": str(settings.proxy_http_port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.deployments.worker_process"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    releaser = DockerReleaser(docker)
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        dep = await start_deployment(
            session_maker,
            temporal_client,
            org.org_id,
            env_id,
            DeploymentSource(version="v1", context_dir=str(write_context(sources / "v1", HEALTHY))),
            task_queue=task_queue,
            user_id=org.user_id,
        )
        await wait_status(session_maker, dep, ("verifying",), timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        activities = make_activities(settings, session_maker, temporal_client, docker)
        async with running_worker(temporal_client, task_queue, activities):
            row = await wait_status(session_maker, dep, ("active", "failed", "rolled_back"), 90)
        assert row.status == "active", row.error
        containers = releaser.managed(str(env_id))
        assert [c.name for c in containers] == [f"fl-deploy-{dep}"]
        assert (await get_app(settings, row.url or "")).status_code == 200
        async with session_maker() as session:
            rows = (
                await session.scalars(
                    select(DeploymentContainer).where(DeploymentContainer.deployment_id == dep)
                )
            ).all()
        assert [(r.name, r.status) for r in rows] == [(f"fl-deploy-{dep}", "running")]
    finally:
        if proc.poll() is None:
            proc.kill()
        releaser.remove_environment(str(env_id))
