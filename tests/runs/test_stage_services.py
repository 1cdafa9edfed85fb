"""Stage services: on Docker a service container (an image built here FROM scratch, no registry)
is reachable from the stage by its service name on the attempt's own network and is gone with the
network when the stage ends; the sandbox refuses a stage with services, in its log, as a config
failure. A service that never becomes healthy fails the stage clearly and leaves nothing behind;
what a crashed worker left is reaped by the next attempt."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from infra.containers import ContainerEngine, ContainerSpec
from infra.runners.base import SERVICE_EXIT, ServiceProcess, StageProcess, process_prefix
from infra.runners.docker_runner import DockerRunner
from infra.runners.docker_services import network_name
from tests.runs.helpers import Collected, executions, log_text, run_pipeline
from tests.runs.images import BUSYBOX_IMAGE

pytestmark = pytest.mark.timeout(180)

WEB_IMAGE = "forgeline-test/busybox-web:1"
WEB_DOCKERFILE = f"""\
FROM {BUSYBOX_IMAGE}
RUN mkdir /www && echo service-ok > /www/index.html
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
"""
WEB_HEALTH = "wget -qO- http://127.0.0.1:8080/ >/dev/null"


@pytest.fixture(scope="module")
def web_image(docker_engine: ContainerEngine) -> str:
    if not docker_engine.image_exists(WEB_IMAGE):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "Dockerfile").write_text(WEB_DOCKERFILE)
            docker_engine.build_image(Path(tmp), WEB_IMAGE)
    return WEB_IMAGE


def _leftovers(engine: ContainerEngine, prefix: str) -> tuple[list[str], list[str]]:
    containers = [
        c.name or "" for c in engine.client.containers.list(all=True, filters={"name": prefix})
    ]
    networks = [
        n.name or "" for n in engine.client.networks.list() if (n.name or "").startswith(prefix)
    ]
    return containers, networks


async def test_service_reachable_by_name_or_refused_by_the_sandbox(
    ctx: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    docker = ctx["runner"].kind == "docker"
    image = request.getfixturevalue("web_image") if docker else "none"
    stage = {
        "name": "test",
        "position": 0,
        "commands": [{"run": "wget -qO- http://web:8080/"}],
        "runtime": {"services": [{"name": "web", "image": image, "health_command": WEB_HEALTH}]},
    }
    run, _ = await run_pipeline(ctx, [stage])
    (row,) = await executions(ctx["session_maker"], run.id)
    log = await log_text(ctx["session_maker"], row.id)
    if docker:
        assert row.status == "success", log
        assert "services ready: web" in log and "service-ok" in log
        engine: ContainerEngine = request.getfixturevalue("docker_engine")
        assert _leftovers(engine, process_prefix(str(run.id), "test")) == ([], [])
    else:
        assert row.status == "failed" and row.exit_code == SERVICE_EXIT
        assert "the sandbox runner cannot start service containers (web)" in log
        assert row.failure_class == "config"


async def test_never_healthy_service_fails_clearly_and_leaves_nothing(
    docker_engine: ContainerEngine, busybox_image: str, web_image: str, tmp_path: Path
) -> None:
    runner = DockerRunner(docker_engine, busybox_image)
    run_id = str(uuid.uuid4())
    process = StageProcess(
        name=f"{process_prefix(run_id, 'test')}1",
        script="echo the stage ran",
        workspace=tmp_path / "ws",
        timeout_seconds=60,
        labels={"forgeline.run_id": run_id},
        services=(
            ServiceProcess(
                name="db",
                image=web_image,  # runs on, never passes its check
                health_command="false",
                health_timeout_seconds=1.5,
            ),
        ),
    )
    out = Collected()
    outcome = await runner.run(process, out)
    assert outcome.exit_code == SERVICE_EXIT
    assert "forgeline: stage services: service db" in out.text
    assert "never became healthy within 1.5s" in out.text
    assert "the stage ran" not in out.text
    assert _leftovers(docker_engine, process_prefix(run_id, "test")) == ([], [])


async def test_a_crashed_attempts_services_and_network_are_reaped(
    docker_engine: ContainerEngine, busybox_image: str
) -> None:
    run_id = str(uuid.uuid4())
    prefix = process_prefix(run_id, "test")
    stale = StageProcess(
        name=f"{prefix}1", script="true", workspace=Path("/nonexistent"), timeout_seconds=1
    )
    docker_engine.create_network(network_name(stale), {"forgeline.run_id": run_id}, internal=True)
    docker_engine.create(
        ContainerSpec(
            name=f"{prefix}1-svc-db",
            image=busybox_image,
            command=["sleep", "600"],
            network=network_name(stale),
            network_aliases=("db",),
        )
    ).start()
    assert _leftovers(docker_engine, prefix) != ([], [])
    removed = await DockerRunner(docker_engine, busybox_image).remove_stale(prefix)
    assert removed == 1
    assert _leftovers(docker_engine, prefix) == ([], [])
