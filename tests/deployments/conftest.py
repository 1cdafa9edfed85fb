"""Deployment tests run against a real Caddy (the settings point the activities at it) and, where
they ask for it, a real Docker engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from docker import DockerClient

from forgeline.settings import Settings
from tests.deployments.images import docker_client
from tests.deployments.proxy import CaddyProcess


@pytest.fixture(scope="session")
def caddy(tmp_root: Path) -> Iterator[CaddyProcess]:
    proc = CaddyProcess(tmp_root / "caddy")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def settings(settings: Settings, caddy: CaddyProcess) -> Settings:
    return settings.model_copy(
        update={"proxy_admin_url": caddy.admin_url, "proxy_http_port": caddy.http_port}
    )


@pytest.fixture(scope="module")
def docker() -> Iterator[DockerClient]:
    """A live Docker engine (a hard failure without one), one client per module."""
    client = docker_client()
    yield client
    client.close()
