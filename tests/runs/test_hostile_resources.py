"""Hostile builds, what a stage cannot take: forks, memory, disk and CPU past its limits; no
process of it outlives a timeout, a cancel or its worker's crash."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from infra.runners import Runner
from infra.runners.cgroups import Cgroups
from infra.runners.sandbox_runner import SandboxRunner
from infra.runners.sandbox_workspace import workspace_usage
from tests.runs.helpers import Collected, process_gone
from tests.runs.hostile import (
    hostile,
    image_for,
)


async def test_a_fork_storm_is_bounded(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Each child that really started leaves a line; forks past the limit fail.
    script = (
        "i=0; while [ $i -lt 400 ]; do (echo x >> spawned; exec sleep 30) & i=$((i+1)); done "
        "2>/dev/null; echo stormed"
    )
    process = hostile(
        runner, tmp_path, script, image=image_for(runner, request), pids_limit=64, timeout=60
    )
    out = Collected()
    await runner.run(process, out)
    spawned = len((process.workspace / "spawned").read_text().splitlines())
    assert 0 < spawned < 64, out.text
    assert await process_gone(runner, process.name)


async def test_ignoring_sigterm_does_not_outlive_the_timeout(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    script = "trap '' TERM; (trap '' TERM; setsid sleep 300 2>/dev/null || sleep 300) & sleep 300"
    process = hostile(runner, tmp_path, script, image=image_for(runner, request), timeout=2)
    result = await runner.run(process, Collected())
    assert result.timed_out
    assert await process_gone(runner, process.name)


async def test_cancel_kills_every_process_of_the_stage(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    script = "nohup sleep 300 >/dev/null 2>&1 & echo started; sleep 300"
    process = hostile(runner, tmp_path, script, image=image_for(runner, request), timeout=120)
    out = Collected()
    task = asyncio.create_task(runner.run(process, out))
    for _ in range(200):
        if "started" in out.text:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await process_gone(runner, process.name)


async def test_memory_limit_is_enforced(
    runner: Runner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A 256 MB buffer, filled, in a 64 MB stage.
    script = "dd if=/dev/zero of=/dev/null bs=268435456 count=1 2>/dev/null && echo allocated"
    out = Collected()
    result = await runner.run(
        hostile(runner, tmp_path, script, image=image_for(runner, request), memory_mb=64), out
    )
    assert result.exit_code != 0, out.text
    assert "allocated" not in out.text


async def test_a_disk_fill_is_stopped(sandbox: SandboxRunner, tmp_path: Path) -> None:
    script = "i=0; while true; do head -c 4194304 /dev/zero > fill.$i || true; i=$((i+1)); done"
    process = hostile(sandbox, tmp_path, script, disk_mb=32, timeout=120)
    out = Collected()
    result = await sandbox.run(process, out)
    assert result.exit_code == 137 and not result.timed_out
    assert "exceeded the disk limit of 32 MB" in out.text
    assert await process_gone(sandbox, process.name)
    # Stopped within one check of the limit, not at the end of the disk (or of the timeout).
    assert workspace_usage(process.workspace, 1 << 40) < 2 * 1024**3


async def test_a_single_file_cannot_exceed_the_disk_limit(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    out = Collected()
    process = hostile(sandbox, tmp_path, "head -c 50000000 /dev/zero > big; echo rc=$?", disk_mb=8)
    await sandbox.run(process, out)
    assert (process.workspace / "big").stat().st_size <= 8 * 1024 * 1024


async def test_remove_stale_kills_a_crashed_workers_stage(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    """A stage whose worker died (the runner's task gone) is found by its cgroup and killed."""
    process = hostile(sandbox, tmp_path, "echo up; sleep 300", timeout=300)
    out = Collected()
    task = asyncio.create_task(sandbox.run(process, out))
    for _ in range(200):
        if "up" in out.text:
            break
        await asyncio.sleep(0.05)
    assert Cgroups().existing(process.name)
    killed = await sandbox.remove_stale(process.name[:-1])
    assert killed == 1
    await asyncio.wait_for(task, 30)
    assert await process_gone(sandbox, process.name)


async def test_cpu_quota_is_set_on_the_stage_group(sandbox: SandboxRunner, tmp_path: Path) -> None:
    """A stage limited to half a core gets that quota from the kernel (its group's cpu limit),
    not from its own goodwill: a busy loop cannot take more."""
    process = hostile(sandbox, tmp_path, "echo up; while :; do :; done", cpus=0.5, timeout=30)
    out = Collected()
    task = asyncio.create_task(sandbox.run(process, out))
    try:
        for _ in range(200):
            if "up" in out.text:
                break
            await asyncio.sleep(0.05)
        [group] = Cgroups().existing(process.name)
        cpu = group.dirs["cpu"]
        if group.unified:
            assert (cpu / "cpu.max").read_text().split() == ["50000", "100000"]
        else:
            assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
            assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert group.pids(), "the busy loop runs inside the group"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await process_gone(sandbox, process.name)
