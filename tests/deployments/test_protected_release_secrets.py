"""The other half of "protected secrets pass the gate first" (tests/runs/test_protected_secrets.py
shows a run naming the environment gets none): the release that passed the protected
environment's approval gate does receive its secret variables, in the container it starts, and
nothing runs with them while the approval is pending. Real API, Postgres, Temporal and Docker."""

from __future__ import annotations

import uuid
from pathlib import Path

from forgeline import environment_variables as env_vars
from infra.deploy_containers import DockerReleaser
from tests.deployments.helpers import (
    another_key,
    make_activities,
    make_environment,
    org_sources,
    protect,
    running_worker,
    start_deployment,
    stop,
    wait_status,
)
from tests.deployments.images import HEALTHY, write_context
from tests.factories import make_org
from workflows.deployment_models import DeploymentSource

SECRET = "hunter2-prod-" + uuid.uuid4().hex[:8]


def container_env(docker, env_id: uuid.UUID) -> list[dict[str, str]]:
    found = []
    for container in DockerReleaser(docker).managed(str(env_id)):
        container.reload()
        pairs = (item.partition("=") for item in container.attrs["Config"]["Env"] or [])
        found.append({name: value for name, _, value in pairs})
    return found


async def test_the_approved_release_receives_the_protected_environments_secrets(
    api_client, settings, session_maker, temporal_client, task_queue, docker, tmp_path: Path
) -> None:
    org = await make_org(session_maker, role="admin")
    _, env_id = await make_environment(
        session_maker,
        org.org_id,
        env_type="production",
        config={
            "environment_variables": env_vars.seal(
                [
                    {"name": "REGION", "value": "eu"},
                    {"name": "DB_PASSWORD", "value": SECRET, "secret": True},
                ],
                settings=settings,
            )
        },
    )
    await protect(session_maker, env_id, 1)
    context = write_context(org_sources(settings, org.org_id) / "v1", HEALTHY, "v1")
    activities = make_activities(settings, session_maker, temporal_client, docker)
    try:
        async with running_worker(temporal_client, task_queue, activities):
            dep = await start_deployment(
                session_maker,
                temporal_client,
                org.org_id,
                env_id,
                DeploymentSource(version="v1", context_dir=str(context)),
                task_queue=task_queue,
                user_id=org.user_id,
            )
            try:
                await wait_status(session_maker, dep, ("awaiting_approval",))
                # Waiting at the gate: no container holds the secret yet.
                assert container_env(docker, env_id) == []
                owner = await another_key(session_maker, org.org_id, org.owner_user_id)
                r = await api_client.post(
                    f"/v1/deployments/{dep}/approve", json={"reason": "release"}, headers=owner
                )
                assert r.status_code == 200, r.text
                row = await wait_status(
                    session_maker, dep, ("active", "failed", "rolled_back"), timeout=120
                )
                assert row.status == "active", row.error
            finally:
                await stop(temporal_client, dep)
        (released,) = container_env(docker, env_id)
        assert released["DB_PASSWORD"] == SECRET
        assert released["REGION"] == "eu"
        # Delivered to Docker only: never in the deployment as the API shows it.
        r = await api_client.get(f"/v1/deployments/{dep}", headers=org.headers)
        assert r.status_code == 200 and SECRET not in r.text
    finally:
        DockerReleaser(docker).remove_environment(str(env_id))
