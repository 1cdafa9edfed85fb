"""Hostile stages against the sandbox's home, /tmp and /dev/shm: /dev/shm filled past its size
stops at it and is each sandbox's own, another run's home is out of sight, the home counts
toward the run's disk limit, and links a stage leaves in its home are never followed by the host
(the stage cache, the Python clean-up, the removal of the run)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.runs import stage_cache
from core.runs.cache_archive import UnsafeCacheArchive
from core.runs.finishing import remove_workspace
from infra.runners.sandbox_args import DISK_EXCEEDED_EXIT
from infra.runners.sandbox_runner import SandboxRunner
from infra.runners.sandbox_workspace import run_home
from infra.storage import LocalObjectStore
from tests.runs.helpers import Collected
from tests.runs.hostile import MARKER, hostile
from tests.runs.sandbox import sandbox_runner
from workflows.stage_runtime_models import StageCache

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=[2, 0], ids=["pooled", "started"])
async def runner(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SandboxRunner]:
    runner = sandbox_runner(
        tmp_path / "state", pool_size=request.param, disk_check_seconds=0.2, shm_mb=8
    )
    yield runner
    await runner.close()


async def test_dev_shm_stops_at_its_size_and_is_each_sandboxs_own(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    filler = (
        f"echo {MARKER} > /dev/shm/mine; "
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=64 2>&1 | grep -o 'No space left'; "
        "df -k /dev/shm | tail -1 | awk '{print \"size\", $2}'; sleep 1; echo alive"
    )
    peeker = "sleep 0.3; cat /dev/shm/mine 2>&1; ls -A /dev/shm; echo peeked"
    outs = [Collected(), Collected()]
    first, second = (hostile(runner, tmp_path, s) for s in (filler, peeker))
    results = await asyncio.gather(runner.run(first, outs[0]), runner.run(second, outs[1]))
    assert [r.exit_code for r in results] == [0, 0], [o.text for o in outs]
    lines = outs[0].text.splitlines()
    assert lines == ["No space left", "size 8192", "alive"], outs[0].text
    assert MARKER not in outs[1].text and "fill" not in outs[1].text
    assert outs[1].text.splitlines()[-1] == "peeked"


async def test_another_runs_home_is_out_of_sight(runner: SandboxRunner, tmp_path: Path) -> None:
    owner = hostile(runner, tmp_path, f"echo {MARKER} > ~/secret; echo {MARKER} > /tmp/secret")
    assert (await runner.run(owner, Collected())).exit_code == 0
    other = hostile(
        runner,
        tmp_path,
        "ls -A /home; ls -A ~; cat /home/*/secret /tmp/secret 2>&1; "
        "find / -xdev -name secret 2>/dev/null; ls -d /workspace/../*; echo done",
    )
    out = Collected()
    assert (await runner.run(other, out)).exit_code == 0, out.text
    assert MARKER not in out.text
    assert out.text.splitlines()[0] == "build"
    assert (run_home(owner.workspace) / "secret").read_text().strip() == MARKER


async def test_the_home_counts_toward_the_disk_limit(runner: SandboxRunner, tmp_path: Path) -> None:
    script = (
        "i=0; while [ $i -lt 40 ]; do "
        "dd if=/dev/urandom of=$HOME/f$i bs=1M count=4 2>/dev/null; i=$((i+1)); done; sleep 30"
    )
    process = hostile(runner, tmp_path, script, disk_mb=48, timeout=90)
    out = Collected()
    result = await runner.run(process, out)
    assert result.exit_code == DISK_EXCEEDED_EXIT, out.text
    assert "exceeded the disk limit" in out.text


async def test_links_left_in_the_home_are_not_followed_by_the_host(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """The stage links its cached directories to host paths (which exist on the host, not in
    the sandbox): saving packs none of the host's files, restoring over a planted link writes
    nothing there, and removing the run leaves the host paths alone."""
    host = tmp_path / "host-dir"
    host.mkdir()
    (host / "secret").write_text(MARKER)
    script = (
        f"ln -s {host} ~/.npm; mkdir -p ~/.cache/pip && ln -s {host}/secret ~/.cache/pip/s && "
        "ln -s ../../.. ~/.cache/pip/up && echo linked"
    )
    process = hostile(runner, tmp_path, script)
    out = Collected()
    assert (await runner.run(process, out)).exit_code == 0, out.text
    store = LocalObjectStore(tmp_path / "objects")
    cache = StageCache(paths=["~/.npm", "~/.cache/pip"], scope=str(uuid.uuid4()))
    home = await runner.stage_home(process.workspace)
    assert home == run_home(process.workspace)
    key = stage_cache.cache_key(cache, process.workspace)
    stage_cache.save(store, cache, key, process.workspace, process.workspace, home=home)
    stored = b"".join(p.read_bytes() for p in (tmp_path / "objects").rglob("*") if p.is_file())
    assert MARKER.encode() not in stored
    # A later run whose stage planted `~/.cache` as a link to a host directory.
    later = hostile(runner, tmp_path, f"ln -s {host} ~/.cache && echo planted")
    assert (await runner.run(later, Collected())).exit_code == 0
    later_home = await runner.stage_home(later.workspace)
    with pytest.raises(UnsafeCacheArchive):
        stage_cache.restore(store, cache, later.workspace, later.workspace, home=later_home)
    assert sorted(p.name for p in host.iterdir()) == ["secret"]
    for run in (process, later):
        await remove_workspace(run.workspace)
    assert (host / "secret").read_text() == MARKER


async def test_a_restored_home_cache_is_the_build_users(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """`~/...` cache paths come back into the next run's home, writable by its stage (the
    worker extracts them; a root-owned npm cache would fail `npm ci` with EACCES)."""
    first = hostile(
        runner,
        tmp_path,
        "mkdir -p ~/.local/share/pnpm/store/v3 && echo a > ~/.local/share/pnpm/store/v3/x",
    )
    assert (await runner.run(first, Collected())).exit_code == 0
    store = LocalObjectStore(tmp_path / "objects")
    cache = StageCache(paths=["~/.local/share/pnpm/store"], scope=str(uuid.uuid4()))
    key = stage_cache.cache_key(cache, first.workspace)
    home = await runner.stage_home(first.workspace)
    assert stage_cache.save(store, cache, key, first.workspace, first.workspace, home=home)
    later = hostile(
        runner,
        tmp_path,
        "cat ~/.local/share/pnpm/store/v3/x && echo b > ~/.local/share/pnpm/store/v3/y && "
        "mkdir ~/.local/bin && echo writable",
    )
    later_home = await runner.stage_home(later.workspace)
    restored = stage_cache.restore(store, cache, later.workspace, later.workspace, home=later_home)
    assert restored.exact
    assert not (later.workspace / "~").exists()
    out = Collected()
    assert (await runner.run(later, out)).exit_code == 0, out.text
    assert out.text.split() == ["a", "writable"]
