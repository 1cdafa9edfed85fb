"""DeploymentWorkflow end to end: real Postgres, a Temporal dev server and a real Docker engine."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from db.models.deployments import DeploymentContainer, DeploymentHealthCheck, DeploymentRuntimeLog
from db.models.projects import Environment
from infra.deploy_containers import DockerReleaser
from tests.deployments.helpers import (
    deployment_row,
    docker_environment,
    get_app,
    running_worker,
    start_deployment,
    wait_status,
)
from tests.deployments.images import HEALTHY, NO_CONTENT, write_context
from workflows.deployment_models import DeploymentSource


async def test_deploy_then_broken_release_rolls_back(
    docker, settings, session_maker, temporal_client, task_queue, tmp_path: Path
):
    org, sources, env_id, activities = await docker_environment(
        settings, session_maker, temporal_client, docker
    )
    releaser = DockerReleaser(docker)
    try:
        async with running_worker(temporal_client, task_queue, activities):
            v1 = await start_deployment(
                session_maker,
                temporal_client,
                org.org_id,
                env_id,
                DeploymentSource(
                    version="v1",
                    commit_sha="a1b2c3d4e5",
                    context_dir=str(write_context(sources / "v1", HEALTHY, "v1")),
                ),
                task_queue=task_queue,
                user_id=org.user_id,
            )
            row = await wait_status(session_maker, v1, ("active", "failed", "rolled_back"))
            assert row.status == "active", row.error
            assert row.image_ref == f"forgeline/{row.project_id}:a1b2c3d4e5"
            assert row.health_summary["status"] == "healthy"
            assert "v1" in (await get_app(settings, row.url or "")).text

            v2 = await start_deployment(
                session_maker,
                temporal_client,
                org.org_id,
                env_id,
                DeploymentSource(
                    version="v2", context_dir=str(write_context(sources / "v2", NO_CONTENT, "v2"))
                ),
                task_queue=task_queue,
                user_id=org.user_id,
            )
            broken = await wait_status(session_maker, v2, ("active", "failed", "rolled_back"))
            assert broken.status == "rolled_back", broken.error
            assert broken.rolled_back_at is not None and broken.rolled_back_to_id == v1
            # The previous version still serves; only its container is left.
            again = await deployment_row(session_maker, v1)
            assert again.status == "active"
            assert "v1" in (await get_app(settings, again.url or "")).text
            assert [c.labels["forgeline.deployment_id"] for c in releaser.managed(str(env_id))] == [
                str(v1)
            ]

        async with session_maker() as session:
            checks = (
                await session.scalars(
                    select(DeploymentHealthCheck).where(DeploymentHealthCheck.deployment_id == v2)
                )
            ).all()
            assert checks and not any(c.ok for c in checks)
            assert all(c.url.endswith("/healthz") for c in checks)
            containers = (
                await session.scalars(
                    select(DeploymentContainer).where(
                        DeploymentContainer.deployment_id.in_([v1, v2])
                    )
                )
            ).all()
            by_dep = {c.deployment_id: c.status for c in containers}
            assert by_dep == {v1: "running", v2: "removed"}
            build_lines = await session.scalar(
                select(func.count()).where(
                    DeploymentRuntimeLog.deployment_id == v1, DeploymentRuntimeLog.source == "build"
                )
            )
            assert build_lines and build_lines > 0
            env = await session.get(Environment, env_id)
            assert env is not None and env.url == again.url
    finally:
        releaser.remove_environment(str(env_id))


async def test_first_deploy_that_fails_health_is_failed_and_removed(
    docker, settings, session_maker, temporal_client, task_queue, tmp_path: Path
):
    org, sources, env_id, activities = await docker_environment(
        settings, session_maker, temporal_client, docker
    )
    try:
        async with running_worker(temporal_client, task_queue, activities):
            dep = await start_deployment(
                session_maker,
                temporal_client,
                org.org_id,
                env_id,
                DeploymentSource(
                    version="v1", context_dir=str(write_context(sources / "b", NO_CONTENT))
                ),
                task_queue=task_queue,
            )
            row = await wait_status(session_maker, dep, ("active", "failed", "rolled_back"))
            assert row.status == "failed"
            assert DockerReleaser(docker).managed(str(env_id)) == []
    finally:
        DockerReleaser(docker).remove_environment(str(env_id))
