"""The run's disk watchers share one walk of the run's tree and pace it by its cost
(infra/runners/disk_pacing.py): concurrent stages of one run no longer walk the same
`node_modules` once each per second."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from core.runs.run_limits import RunDiskWatch
from infra.runners import disk_pacing
from infra.runners.disk_pacing import PACE, next_wait, shared_usage, watch_usage
from infra.runners.sandbox_workspace import run_usage, watch_run_disk


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_next_wait_is_the_interval_or_a_multiple_of_a_slow_walk() -> None:
    assert next_wait(1.0, 0.01) == 1.0
    assert next_wait(1.0, 0.5) == 0.5 * PACE
    assert next_wait(2.0, -5.0) == 2.0  # a clock that went backwards never shortens it


async def test_concurrent_watchers_of_one_run_share_one_walk(tmp_path: Path) -> None:
    calls: list[Path] = []
    gate = threading.Event()

    def measure(root: Path, limit: int) -> int:
        calls.append(root)
        gate.wait(5)
        return 42

    waiters = [asyncio.create_task(shared_usage(tmp_path, 100, measure, 1.0)) for _ in range(8)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(*waiters)
    assert [r[0] for r in results] == [42] * 8
    assert len(calls) == 1


async def test_a_fresh_result_is_reused_and_an_old_one_walked_again(tmp_path: Path) -> None:
    clock = Clock()
    calls = 0

    def measure(root: Path, limit: int) -> int:
        nonlocal calls
        calls += 1
        return calls

    assert (await shared_usage(tmp_path, 5, measure, 1.0, clock))[0] == 1
    clock.now += 0.5
    assert (await shared_usage(tmp_path, 5, measure, 1.0, clock))[0] == 1
    # Another limit (another run's plan) is measured on its own.
    assert (await shared_usage(tmp_path, 6, measure, 1.0, clock))[0] == 2
    clock.now += 1.0
    assert (await shared_usage(tmp_path, 5, measure, 1.0, clock))[0] == 3


async def test_a_failed_walk_fails_its_joiners_and_is_not_kept(tmp_path: Path) -> None:
    gate = threading.Event()
    attempts = 0

    def measure(root: Path, limit: int) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            gate.wait(5)
            raise OSError("the disk went away midway")
        return 7

    waiters = [asyncio.create_task(shared_usage(tmp_path, 9, measure, 60.0)) for _ in range(3)]
    await asyncio.sleep(0.05)
    gate.set()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(o, OSError) for o in outcomes)
    assert (await shared_usage(tmp_path, 9, measure, 60.0))[0] == 7


async def test_a_cancelled_watcher_leaves_the_walk_to_the_others(tmp_path: Path) -> None:
    gate = threading.Event()

    def measure(root: Path, limit: int) -> int:
        gate.wait(5)
        return 3

    first = asyncio.create_task(shared_usage(tmp_path, 4, measure, 1.0))
    second = asyncio.create_task(shared_usage(tmp_path, 4, measure, 1.0))
    await asyncio.sleep(0.05)
    first.cancel()  # its stage ended
    gate.set()
    assert (await second)[0] == 3
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_watchers_of_a_run_over_its_limit_all_stop_it(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "big").write_bytes(b"x" * 200_000)
    killed: list[int] = []
    over = asyncio.Event()
    sandbox = asyncio.create_task(
        watch_run_disk(root, 100_000, 0.01, lambda: killed.append(1), over)
    )
    flagged: list[int] = []
    activity = RunDiskWatch(root, tmp_path / "spool", 1, lambda: flagged.append(1), every=0.01)
    # 1 MB: the workspace alone is under it, the spool (the activity's own) tips it over.
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "log").write_bytes(b"y" * 1_100_000)
    await asyncio.wait_for(asyncio.gather(sandbox, activity.watch()), 10)
    assert over.is_set() and killed == [1]
    assert activity.over and flagged == [1]


async def test_hostile_trees_are_measured_without_following_links(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "huge").write_bytes(b"z" * 500_000)
    (root / "escape").symlink_to(outside)
    (root / "loop").symlink_to(root)
    used = await watch_until(root, 400_000)
    assert used is None  # the link's target is never counted, the loop never walked


async def watch_until(root: Path, limit: int) -> int | None:
    try:
        return await asyncio.wait_for(watch_usage(root, limit, 0.01, run_usage), 0.3)
    except TimeoutError:
        return None


def test_finished_runs_are_forgotten(tmp_path: Path) -> None:
    async def one() -> None:
        await shared_usage(tmp_path / "gone", 1, lambda r, lim: 0, 1.0)

    asyncio.run(one())
    keys = [k for k in disk_pacing._measures if k[1] == str(tmp_path / "gone")]
    assert keys
    disk_pacing._forget(float("inf"))
    assert not [k for k in disk_pacing._measures if k[1] == str(tmp_path / "gone")]
