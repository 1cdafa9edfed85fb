"""The logs API under hostile output: binary and ANSI storms followed over SSE with reconnects
at random points deliver exactly what the download holds, with IDs that never repeat (how a
neighbour fares during a followed flood: tests/runs/test_flood_neighbours.py). Real Temporal,
real Postgres, the sandbox runner; every flood bounded by a log limit and a stage timeout."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from db.models.pipelines import Pipeline, StageLogChunk
from db.session import session_scope
from tests.factories import OrgFixture, make_org
from tests.runs.helpers import executions, make_pipeline, stage, wait_for

Event = tuple[str | None, str | None, str]

# Random bytes (invalid UTF-8, NUL, lone-surrogate encodings, CR, form feeds, U+2028 ...) and
# an ANSI storm: colours, cursor moves, line erases, carriage-return redraws.
STORM = [
    "head -c 300000 /dev/urandom",
    "printf '\\n\\355\\240\\200 lone surrogate \\377\\376 \\000nul \\014ff \\342\\200\\250ls\\n'",
    "i=0; while [ $i -lt 3000 ]; do "
    "printf '\\033[1;3%dm%05d\\033[0m \\033[2K\\r\\033[3A progress %d%%\\r' $((i % 8)) $i $i; "
    "[ $((i % 7)) -eq 0 ] && printf '\\r\\n'; i=$((i+1)); done",
    "head -c 900000 /dev/urandom",
]


def sse_events(body: str) -> list[Event]:
    """Server-sent events as a browser parses them: lines end at CRLF, CR or LF (only), events
    at a blank line, one space after `data:` dropped."""
    events: list[Event] = []
    ev_id = ev_type = None
    data: list[str] = []
    for line in re.split(r"\r\n|\r|\n", body):
        if line == "":
            if ev_type or data:
                events.append((ev_id, ev_type, "\n".join(data)))
            ev_id, ev_type, data = None, None, []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            ev_id = value
        elif field == "event":
            ev_type = value
        elif field == "data":
            data.append(value)
    return events


async def follow(
    client: httpx.AsyncClient, org: OrgFixture, run_id: str, name: str, last: str | None = None
) -> list[Event]:
    headers = dict(org.headers)
    if last is not None:
        headers["Last-Event-ID"] = last
    resp = await client.get(
        f"/v1/runs/{run_id}/stages/{name}/logs",
        params={"follow": "true"},
        headers=headers,
        timeout=300,
    )
    assert resp.status_code == 200, resp.text
    return sse_events(resp.text)


async def trigger(client: httpx.AsyncClient, org: OrgFixture, pipeline_id: uuid.UUID) -> str:
    resp = await client.post(f"/v1/pipelines/{pipeline_id}/runs", json={}, headers=org.headers)
    assert resp.status_code == 202, resp.text
    run_id: str = resp.json()["id"]
    return run_id


async def stored_lines(session_maker: Any, execution_id: uuid.UUID) -> int:
    """Lines of a running attempt stored so far."""
    async with session_maker() as session:
        count = await session.scalar(
            select(func.coalesce(func.sum(StageLogChunk.line_count), 0)).where(
                StageLogChunk.stage_execution_id == execution_id
            )
        )
    return int(count or 0)


async def set_limits(session_maker: Any, pipeline_id: uuid.UUID, **limits: Any) -> None:
    async with session_scope(session_maker) as session:
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        pipeline.config = {**(pipeline.config or {}), "limits": limits}


async def test_binary_and_ansi_storms_follow_exactly_what_the_download_holds(
    api_client, session_maker, worker
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker, org.org_id, [stage("storm", STORM, timeout_seconds=120)]
    )
    run_id = await trigger(api_client, org, pipeline_id)
    rng = random.Random(30)

    # Followers attach (and resume from random points) while the stage still writes.
    async def early_resume() -> list[Event]:
        async def has_lines() -> bool:
            rows = await executions(session_maker, uuid.UUID(run_id))
            return bool(rows) and await stored_lines(session_maker, rows[0].id) > 50

        await wait_for(has_lines, timeout=60, interval=0.05)
        return await follow(api_client, org, run_id, "storm", last=f"1:{rng.randrange(40)}")

    resumer = asyncio.create_task(early_resume())
    events = await follow(api_client, org, run_id, "storm")
    early = await resumer
    assert events[-1] == (None, "end", "success")
    lines = [(i, d) for i, t, d in events if t == "line"]
    resp = await api_client.get(
        f"/v1/runs/{run_id}/stages/storm/logs", headers=org.headers, timeout=120
    )
    assert resp.status_code == 200
    download = resp.text.split("\n")
    assert download[-1] == ""
    download.pop()

    # Exactly the download, line for line; IDs unique, in order, numbered from 0.
    assert [d for _, d in lines] == download
    assert [i for i, _ in lines] == [f"1:{n}" for n in range(len(download))]
    (row,) = await executions(session_maker, uuid.UUID(run_id))
    assert row.log_line_count == len(download) > 3000
    assert row.log_object_key is not None  # the large path: read from the object store
    assert any("\ufffd" in line for line in download)
    assert any("\x1b[" in line for line in download)
    assert any("\x0c" in line or "\u2028" in line for line in download)

    # The early follower resumed after its random line and got the rest exactly.
    early_lines = [(i, d) for i, t, d in early if t == "line"]
    assert early_lines and early_lines == lines[len(lines) - len(early_lines) :]

    # A client that disconnects at random points and resumes with Last-Event-ID each time
    # reassembles the download.
    cuts = sorted(rng.sample(range(1, len(lines) - 1), 6))
    assembled = lines[: cuts[0]]
    for at, until in zip(cuts, [*cuts[1:], None], strict=True):
        last_id = assembled[-1][0]
        again = await follow(api_client, org, run_id, "storm", last_id)
        resumed = [(i, d) for i, t, d in again if t == "line"]
        stop = None if until is None else until - at
        assembled += resumed[:stop]
    assert assembled == lines
    assert len({i for i, _ in assembled}) == len(assembled)
