"""Matrix stages in Forgeline's runner: one stage execution per leg with its own log and status,
`depends_on` on the matrix stage waiting for every leg, and fail-fast on (the running siblings
cancelled) or off (every leg runs to its end)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from db.models.pipelines import StageExecution
from forgeline.settings import Settings
from tests.factories import OrgFixture, make_org
from tests.runs.helpers import (
    by_stage,
    create_run,
    executions,
    log_text,
    make_pipeline,
    pipeline_worker,
    run_row,
    start,
)
from tests.runs.sandbox import sandbox_runner

pytestmark = pytest.mark.timeout(180)

LEGS = ["test (a)", "test (b)", "test (c)"]


def _matrix_stage(script: str, fail_fast: bool) -> dict[str, Any]:
    return {
        "name": "test",
        "position": 0,
        "commands": [{"run": script}],
        "runtime": {
            "matrix": {
                "axes": {"LEG": ["a", "b"]},
                "include": [{"LEG": "c"}],
                "fail_fast": fail_fast,
            }
        },
    }


AFTER = {
    "name": "report",
    "position": 1,
    "commands": [{"run": "echo report"}],
    "depends_on": ["test"],
}


async def _run(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    client: Client,
    task_queue: str,
    tmp_path: Path,
    stages: list[dict[str, Any]],
) -> tuple[str, dict[str, list[StageExecution]], OrgFixture, uuid.UUID]:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, stages)
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    async with pipeline_worker(
        client, task_queue, settings, session_maker, sandbox_runner(tmp_path / "state")
    ):
        await (await start(client, run, task_queue)).result()
    rows = by_stage(await executions(session_maker, run.id))
    return (await run_row(session_maker, run.id)).status, rows, org, run.id


async def test_legs_run_in_parallel_and_needs_waits_for_all(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
    task_queue: str,
    tmp_path: Path,
) -> None:
    status, rows, _, _ = await _run(
        session_maker,
        settings,
        temporal_client,
        task_queue,
        tmp_path,
        [_matrix_stage('echo "leg=$LEG"', True), AFTER],
    )
    assert status == "success"
    assert sorted(rows) == ["report", *LEGS]
    for leg, value in zip(LEGS, "abc", strict=True):
        (row,) = rows[leg]
        assert row.status == "success"
        assert f"leg={value}" in await log_text(session_maker, row.id)
    (report,) = rows["report"]
    assert report.started_at is not None
    assert all(
        r.finished_at is not None and r.finished_at <= report.started_at
        for leg in LEGS
        for r in rows[leg]
    )


async def test_one_failing_leg_without_fail_fast_lets_the_others_finish(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
    task_queue: str,
    tmp_path: Path,
) -> None:
    script = 'echo "leg=$LEG"; [ "$LEG" != b ] || exit 3; sleep 1; echo "done=$LEG"'
    status, rows, org, run_id = await _run(
        session_maker,
        settings,
        temporal_client,
        task_queue,
        tmp_path,
        [_matrix_stage(script, False), AFTER],
    )
    assert status == "failed"
    assert {leg: rows[leg][-1].status for leg in LEGS} == {
        "test (a)": "success",
        "test (b)": "failed",
        "test (c)": "success",
    }
    assert rows["test (b)"][-1].exit_code == 3
    assert "done=a" in await log_text(session_maker, rows["test (a)"][-1].id)
    b_log = await log_text(session_maker, rows["test (b)"][-1].id)
    assert "leg=b" in b_log and "done" not in b_log
    assert rows["report"][-1].status == "skipped"
    # One row per leg attempt: no leg ran twice.
    assert all(len(rows[leg]) == 1 for leg in LEGS)
    # The API shows the matrix stage's aggregate beside its legs.
    detail = (await api_client.get(f"/v1/runs/{run_id}", headers=org.headers)).json()
    assert detail["matrices"] == [
        {
            "stage": "test",
            "status": "failed",
            "legs": {"test (a)": "success", "test (b)": "failed", "test (c)": "success"},
        }
    ]


async def test_fail_fast_cancels_the_running_siblings(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
    task_queue: str,
    tmp_path: Path,
) -> None:
    # b fails once the others are surely running; they would run far longer.
    script = (
        'echo "leg=$LEG"; if [ "$LEG" = b ]; then sleep 2; exit 3; fi; sleep 120; echo finished'
    )
    status, rows, _, _ = await _run(
        session_maker,
        settings,
        temporal_client,
        task_queue,
        tmp_path,
        [_matrix_stage(script, True), AFTER],
    )
    assert status == "failed"
    assert rows["test (b)"][-1].status == "failed"
    for leg in ("test (a)", "test (c)"):
        (row,) = rows[leg]
        assert row.status == "cancelled", (leg, row.status)
        assert "finished" not in await log_text(session_maker, row.id)
    assert rows["report"][-1].status == "skipped"
    assert uuid.UUID(str(rows["report"][-1].run_id))


def test_aggregate_status_of_legs() -> None:
    from core.runs.matrix_status import matrix_statuses

    rows = [
        ("test (a)", 1, "failed"),
        ("test (a)", 2, "success"),  # a retry made it good: its last attempt counts
        ("test (b)", 1, "running"),
        ("lint", 1, "failed"),  # not a leg
        ("build (x)", 1, "skipped"),
        ("build (y)", 1, "skipped"),
    ]
    got = {m.stage: m.status for m in matrix_statuses(rows)}
    assert got == {"build": "skipped", "test": "running"}
