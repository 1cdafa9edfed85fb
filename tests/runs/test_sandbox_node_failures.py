"""Node.js toolchains that cannot be had: a registry outage, an unknown version, a failed,
tampered or hostile download, and an installer killed half way. Each fails the stage with the
reason (never the host's Node instead) and leaves nothing a later stage trips on."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from infra.runners import StageProcess
from infra.runners.node_stages import NODE_MARKER, SETUP_EXIT
from infra.runners.node_toolchain import NODE_TOOLCHAINS, NodeToolchains
from infra.runners.sandbox_runner import SandboxRunner
from tests.runs.helpers import Collected
from tests.runs.node_registry import FakeRegistry, fake_registry, host_package
from tests.runs.sandbox import sandbox_runner

pytestmark = pytest.mark.timeout(300)

NEW = "22.99.0"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def host_packages() -> dict[str, tuple[str, dict[str, object], bytes]]:
    return {name: host_package(name) for name in ("npm", "corepack")}


@pytest.fixture
def registry(
    host_packages: dict[str, tuple[str, dict[str, object], bytes]],
) -> Iterator[FakeRegistry]:
    with fake_registry(host_packages) as served:
        served.add_node(NEW, "2024-07-01T00:00:00Z")
        yield served


@pytest.fixture
async def runner(tmp_path: Path, registry: FakeRegistry) -> AsyncIterator[SandboxRunner]:
    runner = sandbox_runner(tmp_path / "state", node_registry_url=registry.url)
    yield runner
    await runner.close()


def node_stage(root: Path, image: str = "node:22", script: str = "node --version") -> StageProcess:
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-node-1",
        script=script,
        workspace=root,
        root=root,
        timeout_seconds=240,
        image=image,
    )


def leftovers(state: Path) -> list[str]:
    """What the toolchains' directory holds besides its lock files."""
    root = state / NODE_TOOLCHAINS
    return sorted(p.name for p in root.iterdir() if p.name != ".locks") if root.is_dir() else []


async def refused(runner: SandboxRunner, stage: StageProcess) -> str:
    out = Collected()
    outcome = await runner.run(stage, out)
    assert outcome.exit_code == SETUP_EXIT, out.text
    assert out.text.startswith(NODE_MARKER), out.text
    assert len(outcome.notes) == 1 and outcome.notes[0] in out.text
    assert "v20." not in out.text and "v22." not in out.text  # no Node ran at all
    return out.text


async def test_a_registry_outage_fails_the_stage_clearly(
    runner: SandboxRunner, tmp_path: Path, registry: FakeRegistry
) -> None:
    registry.failure = "404"
    text = await refused(runner, node_stage(tmp_path / "ws"))
    assert "image node:22 asks for Node.js 22" in text
    assert f"the registry {registry.url} answered HTTP 404" in text
    assert leftovers(tmp_path / "state") == []


async def test_an_unreachable_registry_never_means_the_hosts_node_for_another_version(
    tmp_path: Path,
) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    runner = sandbox_runner(tmp_path / "state", node_registry_url=url)
    try:
        text = await refused(runner, node_stage(tmp_path / "ws", "node:lts-alpine"))
        assert "image node:lts-alpine asks for the newest LTS Node.js" in text
        assert f"the registry {url} is unreachable" in text
        await refused(runner, node_stage(tmp_path / "ws", "node:22.14.0"))
        # The host's own version needs no registry.
        host = NodeToolchains(tmp_path / "unused").host_version()
        assert host is not None
        out = Collected()
        outcome = await runner.run(node_stage(tmp_path / "ws", f"node:{host}-bookworm"), out)
        assert outcome.exit_code == 0, out.text
        assert f"v{host}" in out.text
    finally:
        await runner.close()
    assert leftovers(tmp_path / "state") == []


async def test_a_version_the_registry_does_not_have(runner: SandboxRunner, tmp_path: Path) -> None:
    text = await refused(runner, node_stage(tmp_path / "ws", "node:99-slim"))
    assert "does not offer" in text and f"newest {NEW}" in text
    assert leftovers(tmp_path / "state") == []


@pytest.mark.parametrize("failure", ["500-tarballs", "tampered", "hostile"])
async def test_a_failed_download_leaves_nothing_and_the_next_stage_installs(
    runner: SandboxRunner, tmp_path: Path, registry: FakeRegistry, failure: str
) -> None:
    if failure == "hostile":  # a tarball that writes outside its directory
        registry.add_node(NEW, "2024-07-01T00:00:00Z", hostile=True)
    else:
        registry.failure = failure
    text = await refused(runner, node_stage(tmp_path / "ws"))
    expected = {
        "500-tarballs": "HTTP 500",
        "tampered": "does not match the registry's integrity hash",
        "hostile": "is not a readable package",
    }
    assert expected[failure] in text
    assert leftovers(tmp_path / "state") == []
    assert not list(tmp_path.rglob("escaped"))
    registry.failure = None
    registry.add_node(NEW, "2024-07-01T00:00:00Z")
    runner.node._packuments.clear()  # the registry's answer changed under the same version
    out = Collected()
    outcome = await runner.run(node_stage(tmp_path / "ws"), out)
    assert outcome.exit_code == 0, out.text
    assert f"v{NEW}" in out.text
    assert leftovers(tmp_path / "state") == [NEW]


async def test_a_killed_download_leaves_nothing_a_later_stage_uses(
    runner: SandboxRunner, tmp_path: Path, registry: FakeRegistry
) -> None:
    registry.failure = "stall"
    installer = (
        "import sys; from pathlib import Path; "
        "from infra.runners.node_toolchain import NodeToolchains, NodeRequest; "
        "NodeToolchains(Path(sys.argv[1]), sys.argv[2]).provide(NodeRequest('test', '22'))"
    )
    root = tmp_path / "state" / NODE_TOOLCHAINS
    proc = subprocess.Popen(
        [sys.executable, "-c", installer, str(root), registry.url],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert await asyncio.to_thread(registry.stalled.wait, 120), "the download never started"
        partial = [p for p in leftovers(tmp_path / "state") if p.startswith(".partial-")]
        assert partial, "the killed installer had nothing on disk yet"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert NEW not in leftovers(tmp_path / "state")  # only the killed one's partial tree
    registry.failure = None
    out = Collected()
    outcome = await runner.run(node_stage(tmp_path / "ws"), out)
    assert outcome.exit_code == 0, out.text
    assert f"v{NEW}" in out.text
    assert leftovers(tmp_path / "state") == [NEW]
    assert registry.tarball_hits(f"node-linux-{runner.node.arch}") == 2
