"""How many sandboxes wait follows the stages: a replacement starts when a stage takes its
sandbox, a stage that finds none waiting makes the pool one larger (up to `pool_max`), an idle
pool goes back to `pool_size`. Every sandbox still serves one stage, and whatever the pool
grew to is removed at close and after a killed worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.runners import StageProcess
from infra.runners import sandbox_pool as pool_module
from infra.runners.cgroups import StageCgroup
from infra.runners.sandbox_pool import GROUP_PREFIX, SandboxPool
from infra.runners.sandbox_runner import SandboxRunner
from infra.runners.sandbox_workspace import SandboxUnavailable
from tests.runs.helpers import Collected
from tests.runs.sandbox import sandbox_runner

WHERE = "readlink /proc/self/ns/pid /proc/self/ns/mnt"


def stage(root: Path, script: str) -> StageProcess:
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-demand-1",
        script=script,
        workspace=root,
        root=root,
        timeout_seconds=30,
    )


async def settled(pool: SandboxPool) -> None:
    """Until no sandbox is starting or being torn down (bounded, not a timing claim)."""
    for _ in range(600):
        if not pool.starting and not pool.tasks:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the pool never settled")


def leftovers(runner: SandboxRunner, pool: SandboxPool) -> tuple[list[Path], list[StageCgroup]]:
    slots = [p for p in runner.config.slots_dir.iterdir() if p.name.startswith(pool.prefix)]
    return slots, runner.cgroups.existing(f"{GROUP_PREFIX}{pool.prefix}")


async def prepared(runner: SandboxRunner, tmp_path: Path) -> SandboxPool:
    """The runner's pool, ready (its first stage prepares it, as in the worker)."""
    assert (await runner.run(stage(tmp_path / "first", "true"), Collected())).exit_code == 0
    assert runner.pool is not None
    await settled(runner.pool)
    return runner.pool


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[SandboxRunner]:
    runner = sandbox_runner(tmp_path / "state", pool_size=1, pool_max=3)
    yield runner
    await runner.close()


async def test_a_replacement_starts_when_a_stage_takes_its_sandbox(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    pool = await prepared(runner, tmp_path)
    waiting = len(pool.ready)
    assert waiting == pool.target
    sandbox = await pool.take()
    try:
        # Before the stage has ended: the pool is already refilling.
        assert len(pool.ready) + pool.starting == pool.target
        await settled(pool)
        assert len(pool.ready) == waiting
        assert sandbox not in pool.ready
    finally:
        pool.retire(sandbox)


async def test_stages_finding_none_waiting_grow_the_pool_up_to_its_maximum(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """Eight takes at once against two waiting sandboxes: six find none and start their own,
    the pool grows by one per such take but never past pool_max, and no two takes get the same
    sandbox."""
    pool = await prepared(runner, tmp_path)
    assert pool.target == 2 and pool.misses == 1  # the first stage found none waiting
    taken = await asyncio.gather(*(pool.take() for _ in range(8)))
    try:
        assert pool.misses == 7 and pool.target == 3
        assert len({id(s) for s in taken}) == 8 and len({s.slot for s in taken}) == 8
        assert len({s.proc.pid for s in taken}) == 8
    finally:
        for sandbox in taken:
            pool.retire(sandbox)
    await settled(pool)
    assert len(pool.ready) == 3


async def test_concurrent_stages_each_run_in_a_sandbox_of_their_own(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """Six first stages at once: the pool is prepared once for all of them (their probes of the
    mount API shared paths and collided, and the host lost its pool), each has its own."""
    outs = [Collected() for _ in range(6)]
    results = await asyncio.gather(
        *(runner.run(stage(tmp_path / f"run-{i}", f"{WHERE}; sleep 1"), outs[i]) for i in range(6))
    )
    assert all(r.exit_code == 0 for r in results)
    namespaces = [tuple(out.text.splitlines()) for out in outs]
    assert all(len(ns) == 2 for ns in namespaces)
    assert len({n for ns in namespaces for n in ns}) == 12, "two stages shared a sandbox"
    assert runner.pool is not None and runner.pool.target <= 3


async def test_an_idle_pool_goes_back_to_its_size_and_removes_the_extra_sandboxes(
    runner: SandboxRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "IDLE_SECONDS", 0.2)
    pool = await prepared(runner, tmp_path)
    assert pool.misses == 1  # grown to two waiting, then idle
    for _ in range(600):
        if pool.target == 1 and len(pool.ready) == 1 and not pool.tasks:
            break
        await asyncio.sleep(0.05)
    assert pool.target == 1 and len(pool.ready) == 1
    slots, groups = leftovers(runner, pool)
    assert len(slots) == 1 and len(groups) == 1, (slots, groups)


async def test_a_maximum_below_the_size_keeps_the_size(tmp_path: Path) -> None:
    runner = sandbox_runner(tmp_path / "state", pool_size=2, pool_max=0)
    try:
        pool = await prepared(runner, tmp_path)
        await asyncio.gather(
            *(runner.run(stage(tmp_path / f"r{i}", "sleep 0.5"), Collected()) for i in range(4))
        )
        assert pool.target == 2
        await settled(pool)
        assert len(pool.ready) == 2
    finally:
        await runner.close()


async def test_close_removes_every_sandbox_the_pool_grew_to(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    pool = await prepared(runner, tmp_path)
    await asyncio.gather(
        *(runner.run(stage(tmp_path / f"r{i}", "sleep 0.3"), Collected()) for i in range(5))
    )
    await runner.close()
    slots, groups = leftovers(runner, pool)
    assert not slots and not groups, (slots, groups)


async def test_sandboxes_that_fail_to_start_leave_nothing_and_the_stage_sees_why(
    runner: SandboxRunner, tmp_path: Path
) -> None:
    """The host stops being able to start sandboxes mid-run (here: their command fails): the
    replacements fail in the background, a stage finding none waiting fails with the reason,
    and no slot or cgroup of a failed start is left."""
    pool = await prepared(runner, tmp_path)
    pool.command = lambda slot, procs: ["/bin/sh", "-c", "echo no namespaces here >&2; exit 1"]
    while pool.ready:
        pool.retire(pool.ready.pop())  # its replacement fails to start
    await settled(pool)
    assert not pool.ready
    with pytest.raises(SandboxUnavailable, match="no namespaces here"):
        await pool.take()
    await settled(pool)
    assert not pool.ready and pool.starting == 0
    slots, groups = leftovers(runner, pool)
    assert not slots and not groups, (slots, groups)


CHILD = """
import asyncio, os, sys
from pathlib import Path
from infra.runners import StageProcess
from infra.runners.sandbox_runner import SandboxConfig, SandboxRunner

async def main() -> None:
    runner = SandboxRunner(SandboxConfig(state_dir=Path(sys.argv[1]), pool_size=1, pool_max=4))
    root = Path(sys.argv[1]) / "ws"
    await runner.run(StageProcess(name="fl-child-demand-1", script="true", workspace=root,
                                  root=root, timeout_seconds=30), lambda b: asyncio.sleep(0))
    taken = await asyncio.gather(*(runner.pool.take() for _ in range(6)))
    for sandbox in taken:
        runner.pool.retire(sandbox)
    while len(runner.pool.ready) < 4:  # grown to four waiting when the worker dies
        await asyncio.sleep(0.05)
    print(os.getpid(), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_workers_grown_pool_is_removed(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "child")],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None
    pid = int((await asyncio.to_thread(child.stdout.readline)).strip())
    runner = sandbox_runner(tmp_path / "state", pool_size=1)
    slots = runner.config.slots_dir
    assert len([p for p in slots.iterdir() if p.name.startswith(f"{pid}-")]) >= 4
    os.kill(pid, signal.SIGKILL)
    child.wait()
    try:
        out = Collected()
        result = await runner.run(stage(tmp_path / "run", "echo ok"), out)
        assert result.exit_code == 0 and out.text == "ok\n"
        assert not [p for p in slots.iterdir() if p.name.startswith(f"{pid}-")]
        assert not runner.cgroups.existing(f"{GROUP_PREFIX}{pid}-")
    finally:
        await runner.close()
