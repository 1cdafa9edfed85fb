"""Await one long call (LLM request, actionlint, a tool) while telling the caller it still runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
Tick = Callable[[], None]


def no_tick() -> None:
    """For callers that do not report progress."""


async def while_ticking(awaitable: Awaitable[T], tick: Tick, every: float = 1.0) -> T:
    """`tick` runs every `every` seconds until `awaitable` is done; its result is returned."""
    task = asyncio.ensure_future(awaitable)
    while True:
        done, _ = await asyncio.wait({task}, timeout=every)
        if done:
            return task.result()
        tick()
