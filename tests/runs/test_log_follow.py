"""Following a stage's log over SSE while the stage retries: the stream carries on from attempt 1
into attempt 2 (an `attempt` event between them), resumes from `<attempt>:<line>` event IDs, and
ends only when no other attempt will run. Real Temporal, real Postgres, local process runner."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from core.runs.logs import LogPosition, parse_event_id
from db.models.pipelines import StageExecution
from tests.factories import OrgFixture, make_org
from tests.runs.helpers import (
    executions,
    log_text,
    make_pipeline,
    parse_sse,
    run_row,
    stage,
    wait_for,
)

Event = tuple[str | None, str | None, str]

# Attempt 1 exits with a retryable code, attempt 2 succeeds; each prints a line every 0.25 s for
# 2 s, so followers attach while an attempt still runs.
FLAKY = [
    "echo attempt-$FORGELINE_ATTEMPT",
    "for i in 1 2 3 4 5 6 7 8; do echo a$FORGELINE_ATTEMPT-$i; sleep 0.25; done",
    '[ "$FORGELINE_ATTEMPT" -ge 2 ] || exit 75',
]


async def trigger(
    api_client: httpx.AsyncClient, org: OrgFixture, pipeline_id: uuid.UUID, **variables: str
) -> str:
    body = {"variables": [{"name": k, "value": v} for k, v in variables.items()]}
    resp = await api_client.post(
        f"/v1/pipelines/{pipeline_id}/runs", json=body, headers=org.headers
    )
    assert resp.status_code == 202, resp.text
    run_id: str = resp.json()["id"]
    return run_id


async def wait_attempt_running(
    session_maker: Any, run_id: str, stage_name: str, attempt: int
) -> StageExecution:
    """The attempt's row once it runs and its first line is stored."""
    found: list[StageExecution] = []

    async def running() -> bool:
        for row in await executions(session_maker, uuid.UUID(run_id)):
            key = (row.stage_name, row.attempt, row.status)
            if key == (stage_name, attempt, "running") and await log_text(session_maker, row.id):
                found.append(row)
                return True
        return False

    await wait_for(running, timeout=60, interval=0.05)
    return found[0]


async def follow(
    api_client: httpx.AsyncClient,
    org: OrgFixture,
    run_id: str,
    stage_name: str,
    *,
    last_event_id: str | None = None,
    **params: str,
) -> list[Event]:
    headers = dict(org.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    resp = await api_client.get(
        f"/v1/runs/{run_id}/stages/{stage_name}/logs",
        params={"follow": "true", **params},
        headers=headers,
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    return parse_sse(resp.text)


async def download(
    api_client: httpx.AsyncClient, org: OrgFixture, run_id: str, stage_name: str, attempt: int
) -> list[str]:
    resp = await api_client.get(
        f"/v1/runs/{run_id}/stages/{stage_name}/logs",
        params={"attempt": str(attempt)},
        headers=org.headers,
    )
    assert resp.status_code == 200, resp.text
    return resp.text.splitlines()


def lines_of(events: list[Event], attempt: int) -> list[tuple[str | None, str]]:
    return [(i, d) for i, t, d in events if t == "line" and (i or "").startswith(f"{attempt}:")]


def numbered(attempt: int, lines: list[str], first: int = 0) -> list[tuple[str | None, str]]:
    return [(f"{attempt}:{n}", line) for n, line in enumerate(lines[first:], start=first)]


def test_event_ids_parse_both_forms() -> None:
    assert parse_event_id("2:17") == LogPosition(2, 17)
    assert parse_event_id(" 40 ") == LogPosition(None, 40)
    assert parse_event_id("3:-1") == LogPosition(3, -1)
    huge = str(2**31)
    for bad in (None, "", "x", "0:4", "1:-2", "1:2:3", "a:1", huge, f"1:{huge}", f"{huge}:1"):
        assert parse_event_id(bad) is None, bad


async def test_follow_continues_into_the_retry_and_resumes(
    api_client, session_maker, worker
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [stage("flaky", FLAKY, retry_count=1, retryable_exit_codes=[75])],
        # Long enough that the follower polls through the gap between the two attempts.
        retry_policy={"initial_interval_seconds": 1.5},
    )
    run_id = await trigger(api_client, org, pipeline_id)
    await wait_attempt_running(session_maker, run_id, "flaky", 1)

    async def resume_during_attempt_2() -> list[Event]:
        await wait_attempt_running(session_maker, run_id, "flaky", 2)
        return await follow(api_client, org, run_id, "flaky", last_event_id="2:1")

    resumer = asyncio.create_task(resume_during_attempt_2())
    events = await follow(api_client, org, run_id, "flaky")
    resumed = await resumer

    assert (await run_row(session_maker, uuid.UUID(run_id))).status == "success"
    first = await download(api_client, org, run_id, "flaky", 1)
    second = await download(api_client, org, run_id, "flaky", 2)
    assert "a1-8" in first and "a2-8" in second

    # Every line of both attempts exactly once, in order, the attempt event between them.
    assert events == [
        *[(i, "line", d) for i, d in numbered(1, first)],
        ("2:-1", "attempt", "2"),
        *[(i, "line", d) for i, d in numbered(2, second)],
        (None, "end", "success"),
    ]

    # Reconnected in the middle of attempt 2 (while it ran): the rest of attempt 2, then the end.
    assert resumed == [
        *[(i, "line", d) for i, d in numbered(2, second, first=2)],
        (None, "end", "success"),
    ]

    # Reconnected after the last line of attempt 1: the attempt event, all of attempt 2.
    after_first = await follow(
        api_client, org, run_id, "flaky", last_event_id=f"1:{len(first) - 1}"
    )
    assert after_first[0] == ("2:-1", "attempt", "2")
    assert lines_of(after_first, 2) == numbered(2, second) and not lines_of(after_first, 1)
    assert after_first[-1] == (None, "end", "success")

    # A plain number (and `after`) counts lines of the first attempt followed: the latest.
    plain = await follow(api_client, org, run_id, "flaky", last_event_id="3")
    assert lines_of(plain, 2) == numbered(2, second, first=4)
    assert lines_of(await follow(api_client, org, run_id, "flaky", after="3"), 2) == numbered(
        2, second, first=4
    )

    # An explicit attempt is followed alone, as before.
    only_first = await follow(api_client, org, run_id, "flaky", attempt="1")
    assert lines_of(only_first, 1) == numbered(1, first)
    assert only_first[-1] == (None, "end", "failed")
    assert "attempt" not in [t for _, t, _ in only_first]

    # A resume position past any line (beyond the 32-bit line column) is refused or ignored,
    # never a server error: `after` is a 422, a Last-Event-ID replays from the start.
    too_far = await api_client.get(
        f"/v1/runs/{run_id}/stages/flaky/logs",
        params={"follow": "true", "after": str(2**40)},
        headers=org.headers,
    )
    assert too_far.status_code == 422
    from_start = await follow(api_client, org, run_id, "flaky", last_event_id=f"2:{2**40}")
    assert lines_of(from_start, 2) == numbered(2, second)


async def test_follow_ends_after_the_last_failed_attempt_while_the_run_goes_on(
    api_client, session_maker, worker
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [
            stage(
                "flaky",
                ["echo try-$FORGELINE_ATTEMPT", "sleep 2", "exit 75"],
                retry_count=1,
                retryable_exit_codes=[75],
            ),
            # Runs in parallel and keeps the run going: only the workflow knows the stage is done.
            stage("slow", "sleep 60"),
        ],
    )
    run_id = await trigger(api_client, org, pipeline_id)
    await wait_attempt_running(session_maker, run_id, "flaky", 1)

    events = await asyncio.wait_for(follow(api_client, org, run_id, "flaky"), timeout=30)

    assert (await run_row(session_maker, uuid.UUID(run_id))).status == "running"
    assert [d for _, t, d in events if t != "line"] == ["2", "failed"]
    assert [d for _, d in lines_of(events, 1)] == ["try-1"]
    assert [d for _, d in lines_of(events, 2)] == ["try-2"]
    assert events[-1] == (None, "end", "failed")

    resp = await api_client.post(f"/v1/runs/{run_id}/cancel", headers=org.headers)
    assert resp.status_code == 202

    async def cancelled() -> bool:
        return (await run_row(session_maker, uuid.UUID(run_id))).status == "cancelled"

    await wait_for(cancelled, timeout=60)


async def test_follow_a_stage_before_it_starts(api_client, session_maker, worker) -> None:
    """A client follows the second stage right after triggering the run: the stream waits for
    the stage's first attempt and carries its lines to `end: success`. An unknown stage is a
    404; a stage its run never reaches (cancelled first) ends with `not_run`."""
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [
            stage("first", ["echo starting", "sleep ${HOLD:-2}", "echo one"]),
            stage("second", ["echo two-a", "echo two-b"], 1),
        ],
    )
    run_id = await trigger(api_client, org, pipeline_id)
    events = await follow(api_client, org, run_id, "second")
    lines = [(i, d) for i, t, d in events if t == "line"]
    assert [i for i, _ in lines] == [f"1:{n}" for n in range(len(lines))]
    texts = [d for _, d in lines]
    assert "two-a" in texts and "two-b" in texts and "one" not in texts
    assert events[-1] == (None, "end", "success")

    missing = await api_client.get(
        f"/v1/runs/{run_id}/stages/nope/logs", params={"follow": "true"}, headers=org.headers
    )
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]

    # Held until cancelled: the cancel lands while `first` runs, whatever the machine's load.
    cancelled = await trigger(api_client, org, pipeline_id, HOLD="600")
    follower = asyncio.create_task(follow(api_client, org, cancelled, "second"))
    await wait_attempt_running(session_maker, cancelled, "first", 1)
    resp = await api_client.post(f"/v1/runs/{cancelled}/cancel", headers=org.headers)
    assert resp.status_code == 202, resp.text
    never = await asyncio.wait_for(follower, timeout=60)
    assert never == [(None, "end", "not_run")]
