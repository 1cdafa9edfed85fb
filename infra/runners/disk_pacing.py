"""A run's disk usage measured once for all its watchers, and paced by what a walk costs.

Every stage of a run watches the run's disk (the stage activity and the sandbox each), and a
run's stages share one checkout: seven concurrent stages of a Node repository with a
`node_modules` of 50 000 entries walked the same tree fourteen times a second between them.
Here the watchers of one tree (same root and limit, same event loop) share one walk at a time
and its result while it is fresh, and a watcher waits `PACE` times as long as the last walk took
before it asks again (walking costs at most about 1/PACE of a core per run, however large the
tree), never less than its own interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# A watcher waits at least this many times the last walk's duration between two checks.
PACE = 10.0
# Entries unused for this long are forgotten (a finished run's).
FORGET_SECONDS = 300.0


@dataclass
class _Measure:
    value: int = 0
    at: float = float("-inf")  # monotonic time the value was measured
    took: float = 0.0  # seconds the last walk took
    running: asyncio.Future[int] | None = None  # the walk under way
    used: float = field(default_factory=time.monotonic)


_measures: dict[tuple[int, str, int], _Measure] = {}


def next_wait(every: float, walk_seconds: float, pace: float = PACE) -> float:
    """Seconds a watcher sleeps before its next check: its interval, or longer when walking the
    tree is slow."""
    return max(every, pace * max(walk_seconds, 0.0))


def _forget(now: float) -> None:
    for key in [
        k for k, m in _measures.items() if m.running is None and now - m.used > FORGET_SECONDS
    ]:
        del _measures[key]


async def shared_usage(
    root: Path,
    limit: int,
    measure: Callable[[Path, int], int],
    fresh: float,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[int, float]:
    """(bytes, seconds the walk took) for `root`: a walk already running for the same root and
    limit is joined, a result younger than `fresh` seconds is reused, else `measure(root, limit)`
    runs in a thread. The walk belongs to no watcher: one cancelled (its stage over) leaves it
    to the others. A failed walk fails every watcher that joined it and is not kept."""
    loop = asyncio.get_running_loop()
    key = (id(loop), str(root), limit)
    now = clock()
    _forget(now)
    entry = _measures.setdefault(key, _Measure())
    entry.used = now
    if entry.running is None and now - entry.at < fresh:
        return entry.value, entry.took
    if entry.running is None:
        entry.running = asyncio.ensure_future(_walk(entry, root, limit, measure, clock))
        entry.running.add_done_callback(_retrieve)
    value = await asyncio.shield(entry.running)
    return value, entry.took


def _retrieve(done: asyncio.Future[int]) -> None:
    """A failed walk nobody waits for any more is not reported as never retrieved."""
    if not done.cancelled():
        done.exception()


async def _walk(
    entry: _Measure,
    root: Path,
    limit: int,
    measure: Callable[[Path, int], int],
    clock: Callable[[], float],
) -> int:
    started = clock()
    try:
        value = await asyncio.to_thread(measure, root, limit)
    finally:
        entry.running = None
    entry.value, entry.at, entry.took = value, clock(), clock() - started
    return value


async def watch_usage(
    root: Path,
    limit: int,
    every: float,
    measure: Callable[[Path, int], int],
    extra: Callable[[int], int] | None = None,
) -> int:
    """Until the run's usage (`measure`, shared, plus `extra(room left)` of this watcher's own)
    passes `limit`: then returns it. Checks every `every` seconds, or slower (next_wait)."""
    wait = every
    while True:
        await asyncio.sleep(wait)
        used, took = await shared_usage(root, limit, measure, fresh=every)
        if used <= limit and extra is not None:
            used += await asyncio.to_thread(extra, limit - used)
        if used > limit:
            return used
        wait = next_wait(every, took)
