"""The API as `make run` starts it (two worker processes) keeps answering `/healthz` while a stage
floods its log and a client follows it over SSE: probes on fresh connections, measured idle and
during the flood in the same test, each against its own baseline. Real Temporal, real Postgres,
the sandbox runner; the flood is bounded by a log limit and a stage timeout."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid
from pathlib import Path

import httpx

from forgeline.settings import Settings
from tests.api_process import ApiProcess
from tests.factories import make_org
from tests.runs.helpers import executions, make_pipeline, stage, wait_for
from tests.runs.test_log_flood_api import set_limits, stored_lines

PROBES = 40


def probe(url: str, count: int) -> list[float]:
    """`count` sequential /healthz calls, each on a new connection (any worker may take it)."""
    times: list[float] = []
    for _ in range(count):
        began = time.perf_counter()
        resp = httpx.get(f"{url}/healthz", timeout=120)
        times.append(time.perf_counter() - began)
        assert resp.status_code == 200, resp.text
    return times


async def probe_in_thread(url: str, count: int) -> list[float]:
    """Probed from a thread of its own: the test's event loop (which runs the flooding stage's
    worker) never delays the probe's own reads."""
    result: list[list[float]] = []
    thread = threading.Thread(target=lambda: result.append(probe(url, count)), daemon=True)
    thread.start()
    await asyncio.to_thread(thread.join, 300)
    assert result, "the probes did not finish"
    return result[0]


async def test_healthz_answers_while_a_followed_log_floods(
    settings: Settings, session_maker, worker, tmp_path: Path
) -> None:
    api = ApiProcess(settings, tmp_path / "api.log", workers=2).start()
    try:
        org = await make_org(session_maker)
        idle = await probe_in_thread(api.url, PROBES)

        loud = await make_pipeline(
            session_maker,
            org.org_id,
            [stage("loud", "yes 'flood flood flood flood flood'", timeout_seconds=90)],
        )
        await set_limits(session_maker, loud, log_max_bytes=60_000_000, on_log_limit="truncate")
        async with httpx.AsyncClient(base_url=api.url, headers=org.headers, timeout=300) as http:
            resp = await http.post(f"/v1/pipelines/{loud}/runs", json={})
            assert resp.status_code == 202, resp.text
            run_id = resp.json()["id"]

            async def flooding() -> bool:
                rows = await executions(session_maker, uuid.UUID(run_id))
                return bool(rows) and await stored_lines(session_maker, rows[0].id) > 10_000

            await wait_for(flooding, timeout=60, interval=0.05)
            received = 0
            ended = asyncio.Event()

            async def follow() -> None:
                nonlocal received
                async with http.stream(
                    "GET", f"/v1/runs/{run_id}/stages/loud/logs", params={"follow": "true"}
                ) as stream:
                    assert stream.status_code == 200
                    async for chunk in stream.aiter_bytes():
                        received += len(chunk)
                ended.set()

            follower = asyncio.create_task(follow())

            async def following() -> bool:
                return received > 1_000_000

            await wait_for(following, timeout=60, interval=0.05)
            during = await probe_in_thread(api.url, PROBES)
            assert not ended.is_set()  # the flood and its follower were on throughout
            rows = await executions(session_maker, uuid.UUID(run_id))
            assert rows[0].status == "running"
            cancel = await http.post(f"/v1/runs/{run_id}/cancel")
            assert cancel.status_code in (200, 202), cancel.text
            await asyncio.wait_for(follower, timeout=120)
    finally:
        api.stop()

    idle_median, busy_median = statistics.median(idle), statistics.median(during)
    ratio = busy_median / idle_median
    print(
        f"/healthz with 2 API workers: idle median {idle_median * 1000:.1f} ms, while a followed "
        f"log floods {busy_median * 1000:.1f} ms ({ratio:.1f}x); follower read {received} bytes"
    )
    assert len(during) == PROBES and received > 1_000_000
    # The same order of magnitude as idle, not the seconds a stalled event loop costs.
    assert ratio < 10, ratio
