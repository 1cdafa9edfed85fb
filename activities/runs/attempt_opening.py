"""When a stage attempt's `running` row is written: once its process has run for OPEN_AFTER
seconds, or at once when something needs the row (a log chunk to store). An attempt that ends
before then has its row opened and closed by one statement (core/runs/short_attempts.py).

A worker killed before the row was opened leaves no row: the next attempt's opening records this
one as lost before it started, as for a kill before any opening statement was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from core.runs.stage_records import OpenedAttempt

# Longer than a no-op stage takes under load, short enough that a stage's row says `running`
# about as soon as anyone could look.
OPEN_AFTER = 0.05


class AttemptOpening:
    """`opened` resolves once the row is open (or fails with the opening's error); `take_over()`
    hands the opening to the closing statement when it has not started."""

    def __init__(
        self,
        open_row: Callable[[], Awaitable[OpenedAttempt]],
        *,
        runner: str,
        container_name: str,
        after: float = OPEN_AFTER,
    ) -> None:
        loop = asyncio.get_running_loop()
        # What the row is opened with, by whichever statement opens it.
        self.runner = runner
        self.container_name = container_name
        self._open_row = open_row
        self.opened: asyncio.Future[OpenedAttempt] = loop.create_future()
        self._task: asyncio.Future[OpenedAttempt] | None = None
        self._taken_over = False
        self._timer = loop.call_later(after, self.start)

    def start(self) -> asyncio.Future[OpenedAttempt]:
        """Open the row now (if not already opening); `opened` says when it is."""
        if self._taken_over:
            raise RuntimeError("the attempt's row is written by its closing statement")
        if self._task is None:
            self._timer.cancel()
            self._task = asyncio.ensure_future(self._open_row())
            self._task.add_done_callback(self._settle)
        return self.opened

    def take_over(self) -> bool:
        """True when no opening was sent: the caller's closing statement opens the row, and
        nothing here will. False when the row is (being) opened: await `start()`."""
        if self._task is not None:
            return False
        self._timer.cancel()
        self._taken_over = True
        return True

    def _settle(self, task: asyncio.Future[OpenedAttempt]) -> None:
        if self.opened.done():
            return
        if task.cancelled():
            self.opened.cancel()
        elif (exc := task.exception()) is not None:
            self.opened.set_exception(exc)
        else:
            self.opened.set_result(task.result())
