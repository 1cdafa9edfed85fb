"""Run a coroutine to completion from synchronous code, inside or outside a running event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_blocking(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`make()` run on an event loop of its own until it finishes; its result or its exception.

    Synchronous entry points (Alembic's command API, the embedded server's start) are called from
    plain code and from async code alike: with no loop running here a private loop is used (the
    thread's current loop, if any, is left as it was); under a running loop, a worker thread
    runs it and this thread waits, as a blocking driver call would.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            return runner.run(make())
    with ThreadPoolExecutor(1, thread_name_prefix="run-blocking") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
