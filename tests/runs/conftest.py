"""Fixtures for pipeline-run tests: both runners (real Docker and local processes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from activities.containers import ContainerEngine
from activities.runners import Runner
from activities.runners.docker_runner import DockerRunner
from activities.runners.local_runner import LocalProcessRunner
from tests.runs.images import connect_engine, ensure_busybox_image

RUNNER_KINDS = ["local", "docker"]


@pytest.fixture(scope="session")
def docker_engine() -> ContainerEngine:
    engine = connect_engine()
    ensure_busybox_image(engine)
    return engine


@pytest.fixture(scope="session")
def busybox_image(docker_engine: ContainerEngine) -> str:
    return ensure_busybox_image(docker_engine)


def make_runner(kind: str, request: pytest.FixtureRequest, state_dir: Path) -> Runner:
    if kind == "docker":
        engine: ContainerEngine = request.getfixturevalue("docker_engine")
        return DockerRunner(engine, request.getfixturevalue("busybox_image"))
    return LocalProcessRunner(state_dir)


@pytest.fixture(params=RUNNER_KINDS)
async def runner(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runner]:
    yield make_runner(request.param, request, tmp_path / "runner-state")
