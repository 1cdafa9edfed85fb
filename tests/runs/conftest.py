"""Fixtures for pipeline-run tests: both isolated runners (the bubblewrap sandbox, real Docker)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from forgeline.settings import PIPELINES_TASK_QUEUE, Settings
from infra.containers import ContainerEngine
from infra.runners import Runner
from infra.runners.docker_runner import DockerRunner
from infra.runners.sandbox_runner import SandboxRunner
from tests.factories import OrgFixture, make_org
from tests.runs.helpers import pipeline_worker, run_stages
from tests.runs.hostile import Listener
from tests.runs.images import connect_engine, ensure_busybox_image
from tests.runs.sandbox import sandbox_runner

RUNNER_KINDS = ["sandbox", "docker"]


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
    return sandbox_runner(state_dir)


@pytest.fixture(params=RUNNER_KINDS)
async def runner(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runner]:
    runner = make_runner(request.param, request, tmp_path / "runner-state")
    yield runner
    if request.param != "docker":  # the Docker engine is the session's, closed with it
        await runner.close()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
async def worker(
    temporal_client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> AsyncIterator[Worker]:
    """A sandbox-runner worker on the production pipelines queue, where the API starts runs."""
    runner = sandbox_runner(tmp_path / "state")
    async with pipeline_worker(
        temporal_client, PIPELINES_TASK_QUEUE, settings, session_maker, runner
    ) as w:
        yield w


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A loopback TCP listener of the test's own, counting what reaches it."""
    server = Listener()
    yield server
    server.close()


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[SandboxRunner]:
    """A sandbox runner that checks its stages' disk use every 0.2 s."""
    runner = sandbox_runner(tmp_path / "state", disk_check_seconds=0.2)
    yield runner
    await runner.close()


@pytest.fixture
async def org(session_maker: async_sessionmaker[AsyncSession]) -> OrgFixture:
    """A fresh organization of the test's own."""
    return await make_org(session_maker)


@pytest.fixture
def image(runner: Runner, request: pytest.FixtureRequest) -> str | None:
    """The image a Docker runner builds in; the sandbox needs none."""
    return request.getfixturevalue("busybox_image") if runner.kind == "docker" else None


@pytest.fixture
def ctx(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
    task_queue: str,
    runner: Runner,
    org: OrgFixture,
    image: str | None,
) -> dict[str, Any]:
    """What `run_pipeline` needs: the services, the runner, the organization and the image."""
    return {
        "session_maker": session_maker,
        "settings": settings,
        "client": temporal_client,
        "task_queue": task_queue,
        "runner": runner,
        "org": org,
        "image": image,
    }


@pytest.fixture
def run_limited(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
    task_queue: str,
    tmp_path: Path,
) -> Callable[..., Awaitable[tuple[uuid.UUID, str]]]:
    """`run_stages` bound to the test's services: a new organization's pipeline of `stages`
    with the pipeline limits given, run once (under other `settings` when given)."""

    async def run(
        stages: list[dict[str, Any]], settings: Settings = settings, **limits: Any
    ) -> tuple[uuid.UUID, str]:
        return await run_stages(
            session_maker, settings, temporal_client, task_queue, tmp_path, stages, **limits
        )

    return run
