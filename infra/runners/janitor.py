"""The build host's sweep of stage leftovers: containers (and their service networks) of attempts
whose worker died and which no later attempt came to remove, once their stage's deadline passed."""

from __future__ import annotations

import asyncio
import logging

from infra.runners.base import Runner

log = logging.getLogger("forgeline.runners.janitor")

SWEEP_INTERVAL_SECONDS = 300.0


async def sweep_forever(runner: Runner, interval_seconds: float = SWEEP_INTERVAL_SECONDS) -> None:
    """Sweep now, then every `interval_seconds`, until cancelled; an engine that does not
    answer is tried again at the next sweep."""
    while True:
        try:
            removed = await runner.sweep_expired()
        except Exception as exc:
            log.warning("sweeping stage leftovers failed: %r", exc)
        else:
            if removed:
                log.info("removed %d stage leftovers past their deadline", removed)
        await asyncio.sleep(interval_seconds)
