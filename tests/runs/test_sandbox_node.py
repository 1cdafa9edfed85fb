"""Node.js stages in the real bubblewrap sandbox: the Node an image declares, downloaded once
per host from an npm registry (served on 127.0.0.1 by the test) and mounted read-only first on
PATH; corepack's shims and npm's global installs in the stage's own directory; the host's Node
only when it is the declared version."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from infra.runners import StageProcess
from infra.runners.node_stages import NODE_TOOLCHAINS_MOUNT, STAGE_DIR
from infra.runners.node_toolchain import HOST_NODE, NODE_TOOLCHAINS, NodeToolchains
from infra.runners.sandbox_runner import SandboxRunner
from tests.runs.helpers import Collected
from tests.runs.node_registry import FakeRegistry, fake_registry, host_package
from tests.runs.sandbox import sandbox_runner

pytestmark = pytest.mark.timeout(300)

NEW = "22.99.0"  # a release the host does not have


@pytest.fixture(scope="module")
def host_packages() -> dict[str, tuple[str, dict[str, object], bytes]]:
    return {name: host_package(name) for name in ("npm", "corepack")}


@pytest.fixture
def registry(
    host_packages: dict[str, tuple[str, dict[str, object], bytes]],
) -> Iterator[FakeRegistry]:
    with fake_registry(host_packages) as served:
        served.add_node("22.3.0", "2024-06-01T00:00:00Z")
        served.add_node(NEW, "2024-07-01T00:00:00Z")
        yield served


@pytest.fixture
async def runner(tmp_path: Path, registry: FakeRegistry) -> AsyncIterator[SandboxRunner]:
    runner = sandbox_runner(tmp_path / "state", node_registry_url=registry.url)
    yield runner
    await runner.close()


def node_stage(root: Path, script: str, image: str = "node:22") -> StageProcess:
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-node-1",
        script=script,
        workspace=root,
        root=root,
        timeout_seconds=240,
        image=image,
    )


def values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_symlink():
            digest.update(str(path.readlink()).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
            digest.update(oct(path.stat().st_mode).encode())
    return digest.hexdigest()


async def test_a_node_22_stage_gets_node_22_with_npm_and_corepack(
    runner: SandboxRunner, tmp_path: Path, registry: FakeRegistry
) -> None:
    script = (
        'echo "version=$(node --version)"; echo "node=$(command -v node)"; '
        'echo "npm=$(npm --version)"; echo "npm_path=$(command -v npm)"; '
        'corepack enable && echo "pnpm=$(command -v pnpm)"; '
        'echo "prefix=$(npm config get prefix)"; echo "home=$HOME"'
    )
    process = node_stage(tmp_path / "ws", script)
    out = Collected()
    outcome = await runner.run(process, out)
    assert outcome.exit_code == 0, out.text
    assert outcome.notes == ()
    found = values(out.text)
    bin_dir = f"{NODE_TOOLCHAINS_MOUNT}/{NEW}/bin"
    assert out.text.splitlines()[0].startswith(f"forgeline: Node.js {NEW} for image node:22 (")
    assert found["version"] == f"v{NEW}"
    assert found["node"] == f"{bin_dir}/node"
    assert found["npm"] == host_package("npm")[0]  # the registry's npm, run by the stage's node
    assert found["npm_path"] == f"{bin_dir}/npm"
    own = f"{found['home']}/{STAGE_DIR}/{process.name}"
    assert found["pnpm"] == f"{own}/bin/pnpm"  # corepack's shim: the stage's own, not the toolchain
    assert found["prefix"] == own
    assert registry.tarball_hits(f"node-linux-{runner.node.arch}") == 1
    installed = tmp_path / "state" / NODE_TOOLCHAINS
    assert sorted(p.name for p in installed.iterdir() if not p.name.startswith(".")) == [NEW]
    assert not (installed / NEW / "bin" / "pnpm").exists()


async def test_the_hosts_node_serves_only_its_own_version(
    runner: SandboxRunner, tmp_path: Path, registry: FakeRegistry
) -> None:
    host = NodeToolchains(tmp_path / "unused").host_version()
    assert host is not None
    major = host.split(".")[0]
    out = Collected()
    stage = node_stage(tmp_path / "ws", 'echo "version=$(node --version) $(command -v node)"')
    outcome = await runner.run(stage, out)
    assert outcome.exit_code == 0, out.text
    # node:22 is not the host's major: its own release, not the host's.
    assert values(out.text)["version"] != f"v{host} {HOST_NODE}"
    asked = sum(registry.hits.values())
    out = Collected()
    host_stage = node_stage(tmp_path / "ws", 'echo "version=$(node --version)"', f"node:{major}")
    outcome = await runner.run(host_stage, out)
    assert outcome.exit_code == 0, out.text
    assert values(out.text)["version"] == f"v{host}"
    assert not out.text.startswith("forgeline:")  # the host's own Node: nothing to say
    assert sum(registry.hits.values()) == asked  # the registry is not asked


async def test_two_concurrent_stages_download_a_new_version_once(
    runner: SandboxRunner, tmp_path: Path, registry: FakeRegistry
) -> None:
    outs = [Collected() for _ in range(3)]
    stages = [node_stage(tmp_path / f"ws{i}", "node --version") for i in range(3)]
    outcomes = await asyncio.gather(*(runner.run(s, o) for s, o in zip(stages, outs, strict=True)))
    for outcome, out in zip(outcomes, outs, strict=True):
        assert outcome.exit_code == 0, out.text
        assert f"v{NEW}" in out.text
    assert registry.tarball_hits(f"node-linux-{runner.node.arch}") == 1
    assert registry.tarball_hits("npm") == 1
    assert sum("downloaded from" in out.text for out in outs) == 1


async def test_a_hostile_stage_cannot_change_the_toolchain(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    tool = tmp_path / "ws" / "tool"  # a package of the checkout's (the build user's files)
    tool.mkdir(parents=True)
    (tool / "package.json").write_text('{"name": "tool", "version": "1.0.0", "bin": "tool.js"}')
    (tool / "tool.js").write_text("#!/usr/bin/env node\nconsole.log('tool ran')\n")
    out = Collected()
    assert (await runner.run(node_stage(tmp_path / "ws", "true"), out)).exit_code == 0, out.text
    installed = tmp_path / "state" / NODE_TOOLCHAINS / NEW
    before = tree_digest(installed)
    tc = f"{NODE_TOOLCHAINS_MOUNT}/{NEW}"
    attempts = {
        "overwrite": f"echo 'echo pwned' > {tc}/bin/node",
        "remove": f"rm -rf {tc}/lib/node_modules/npm",
        "add-version": f"mkdir {NODE_TOOLCHAINS_MOUNT}/23.0.0",
        "chmod": f"chmod 777 {tc}/bin/node",
        "relink": f"ln -sf /bin/sh {tc}/bin/npx",
        "corepack-into-toolchain": f"corepack enable --install-directory {tc}/bin",
        "global-into-toolchain": f"npm install -g --offline --no-audit --prefix {tc} ./tool",
    }
    script = "; ".join(
        f"({cmd}) >/dev/null 2>&1 && echo done={name}" for name, cmd in attempts.items()
    )
    # What the stage may do: a global install into its own directory.
    script += "; npm install -g --offline --no-audit ./tool >/dev/null 2>&1"
    script += '; echo "tool=$(command -v tool)"; echo "home=$HOME"'
    out = Collected()
    outcome = await runner.run(node_stage(tmp_path / "ws", script + "; node --version"), out)
    assert outcome.exit_code == 0, out.text
    assert "done=" not in out.text, out.text
    found = values(out.text)
    assert found["tool"].startswith(f"{found['home']}/{STAGE_DIR}/"), out.text
    assert f"v{NEW}" in out.text
    assert tree_digest(installed) == before
    assert sorted(p.name for p in installed.parent.iterdir() if not p.name.startswith(".")) == [NEW]
