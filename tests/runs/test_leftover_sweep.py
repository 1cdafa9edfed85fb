"""Leftovers of a stage whose worker died and that no attempt retried (a cancelled or failed run)
are swept by the build host once the stage's deadline has passed: the Docker runner labels the
stage's container, its services and its network with that deadline; the sweep removes what is past
it and nothing else (a running stage, a deployment's container, a label that is not a number), two
sweeps at once do not trip over each other, and an engine outage does not stop the sweeping."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from activities.deps import WorkerDeps
from activities.runs.registration import build_registration
from infra.containers import EXPIRES_AT, LABEL_PREFIX, ContainerEngine, ContainerSpec
from infra.runners.base import OutputCallback, Runner, StageOutcome, StageProcess, process_prefix
from infra.runners.docker_runner import LEFTOVER_GRACE_SECONDS, DockerRunner
from infra.runners.janitor import sweep_forever

pytestmark = pytest.mark.timeout(180)

LABEL = f"{LABEL_PREFIX}{EXPIRES_AT}"


def _names(engine: ContainerEngine, prefix: str) -> list[str]:
    found = engine.client.containers.list(all=True, filters={"name": prefix})
    return sorted(c.name or "" for c in found if (c.name or "").startswith(prefix))


def _networks(engine: ContainerEngine, prefix: str) -> list[str]:
    return sorted(
        n.name or "" for n in engine.client.networks.list() if (n.name or "").startswith(prefix)
    )


def _container(engine: ContainerEngine, image: str, name: str, labels: dict[str, str]) -> None:
    engine.create(
        ContainerSpec(name=name, image=image, command=["sleep", "600"], labels=labels)
    ).start()


async def test_a_running_stage_carries_its_deadline(
    docker_engine: ContainerEngine, busybox_image: str, tmp_path: Path
) -> None:
    runner = DockerRunner(docker_engine, busybox_image)
    run_id = str(uuid.uuid4())
    name = f"{process_prefix(run_id, 'build')}1"
    process = StageProcess(
        name=name, script="sleep 60", workspace=tmp_path / "ws", timeout_seconds=120
    )
    started = time.time()
    running = asyncio.create_task(runner.run(process, _discard))
    try:
        for _ in range(200):
            container = docker_engine.get(name)
            if container is not None and container.status in ("created", "running"):
                break
            await asyncio.sleep(0.05)
        assert container is not None
        deadline = float(container.labels[LABEL])
        assert started + 120 + LEFTOVER_GRACE_SECONDS - 5 <= deadline
        assert deadline <= time.time() + 120 + LEFTOVER_GRACE_SECONDS + 5
        # Not expired: a sweep leaves the running stage alone.
        await runner.sweep_expired()
        assert _names(docker_engine, name) == [name]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert _names(docker_engine, name) == []


async def _discard(data: bytes) -> None:
    return None


async def test_sweep_removes_only_what_is_past_its_deadline(
    docker_engine: ContainerEngine, busybox_image: str
) -> None:
    prefix = f"fl-sweep-{uuid.uuid4().hex[:8]}-"
    past, future = f"{time.time() - 5:.0f}", f"{time.time() + 3600:.0f}"
    _container(docker_engine, busybox_image, f"{prefix}stage", {LABEL: past})
    _container(docker_engine, busybox_image, f"{prefix}stage-svc-db", {LABEL: past})
    _container(docker_engine, busybox_image, f"{prefix}running", {LABEL: future})
    _container(docker_engine, busybox_image, f"{prefix}garbage", {LABEL: "soon; rm -rf /"})
    _container(
        docker_engine, busybox_image, f"{prefix}deployment", {"forgeline.deployment_id": "x"}
    )
    docker_engine.create_network(f"{prefix}net", {LABEL: past}, internal=True)
    docker_engine.create_network(f"{prefix}live-net", {LABEL: future}, internal=True)
    try:
        runner = DockerRunner(docker_engine, busybox_image)
        # Two build hosts sweeping the same engine at once: each leftover goes once, no error.
        counts = await asyncio.gather(runner.sweep_expired(), runner.sweep_expired())
        assert sum(counts) >= 3
        assert _names(docker_engine, prefix) == [
            f"{prefix}deployment",
            f"{prefix}garbage",
            f"{prefix}running",
        ]
        assert _networks(docker_engine, prefix) == [f"{prefix}live-net"]
    finally:
        await runner.remove_stale(prefix)
        docker_engine.remove_network(f"{prefix}live-net")


class _FlakyRunner(Runner):
    kind = "flaky"

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, process: StageProcess, on_output: OutputCallback) -> StageOutcome:
        raise NotImplementedError

    async def remove_stale(self, prefix: str) -> int:
        return 0

    async def sweep_expired(self) -> int:
        self.calls += 1
        if self.calls % 2:
            raise ConnectionError("engine not answering")
        return 1


async def test_an_engine_outage_does_not_stop_the_sweeping() -> None:
    runner = _FlakyRunner()
    chore = asyncio.create_task(sweep_forever(runner, interval_seconds=0.01))
    for _ in range(500):
        if runner.calls >= 4:
            break
        await asyncio.sleep(0.01)
    chore.cancel()
    await asyncio.gather(chore, return_exceptions=True)
    assert runner.calls >= 4 and chore.cancelled()


def test_the_build_host_sweeps_in_the_background(settings, session_maker) -> None:
    deps = WorkerDeps(settings=settings, session_maker=session_maker, temporal=None)  # type: ignore[arg-type]
    registration = build_registration(deps)
    assert len(registration.background) == 1
