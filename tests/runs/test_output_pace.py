"""OutputPace: a stage's log work gets at most its share of the worker's event loop, on top of
the byte rate; the waits are lower bounds (asyncio never wakes a sleeper early)."""

from __future__ import annotations

import asyncio

from core.runs.log_capture import LOOP_SHARE, OutputPace


async def waited(pace: OutputPace, size: int, busy: float) -> float:
    loop = asyncio.get_running_loop()
    began = loop.time()
    await pace.take(size, busy)
    return loop.time() - began


async def test_log_work_waits_for_the_rest_of_the_loop_to_have_its_share() -> None:
    pace = OutputPace(rate=1 << 30)  # the byte rate never binds here
    busy = 0.02
    assert await waited(pace, 1, busy) >= busy * (1 - LOOP_SHARE) / LOOP_SHARE


async def test_the_byte_rate_still_binds_when_the_work_is_cheap() -> None:
    pace = OutputPace(rate=65536, share=1.0)
    await pace.take(65536)  # the burst
    assert await waited(pace, 6554, 0.0) >= 0.09


async def test_one_stages_costly_log_work_does_not_pace_another_stage() -> None:
    # Two stages' pumps, each with its own pace: one's log work does not slow the other's.
    cheap, costly = OutputPace(rate=1 << 30), OutputPace(rate=1 << 30)
    slow, fast = await asyncio.gather(waited(costly, 1, 0.05), waited(cheap, 1, 0.0))
    assert slow >= 0.05 * (1 - LOOP_SHARE) / LOOP_SHARE
    assert fast <= slow
