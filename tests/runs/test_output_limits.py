"""Stages that flood their output: the log stops at its limit with a marker and the stage fails
(or carries on truncated, as the pipeline says); cancel and timeout end a flooding stage and
close its attempt even when the log store stalls; artifacts past their limits are reported on
the stage and in its log, or fail it. Real Temporal, real Postgres, the sandbox runner; every
flood is bounded by a limit and a stage timeout."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowFailureError

from core.runs.log_capture import LineSplitter, LogCapture, LogChunk
from core.runs.plan import stage_spec
from db.models.pipelines import Artifact, Pipeline
from db.session import session_scope
from forgeline.secret_masking import SecretMasker
from forgeline.settings import Settings
from infra.runners import StageProcess
from infra.runners.sandbox_runner import SandboxRunner
from tests.factories import make_org
from tests.runs.helpers import (
    create_run,
    executions,
    log_text,
    make_pipeline,
    pipeline_worker,
    process_gone,
    run_row,
    stage,
    start,
    wait_for,
)
from tests.runs.sandbox import sandbox_runner

# An endless flood of short lines, and one of a single endless line.
FLOOD = "yes 'flood flood flood flood flood flood flood'"
ENDLESS_LINE = "tr '\\0' x < /dev/zero"


class Stored:
    def __init__(self) -> None:
        self.chunks: list[LogChunk] = []

    async def __call__(self, chunk: LogChunk) -> None:
        self.chunks.append(chunk)

    @property
    def lines(self) -> list[str]:
        return [line for c in self.chunks for line in c.lines]


# ------------------------------------------------------------------------ capture, no services


async def test_capture_stops_at_the_limit_with_one_marker(tmp_path: Path) -> None:
    stored = Stored()
    reached: list[int] = []
    secret = "hunter2-secret-value"
    capture = LogCapture(
        stored,
        SecretMasker([secret]),
        tmp_path / "spool.log",
        limit_bytes=10_000,
        on_limit=lambda: reached.append(1),
    )
    # Lines of 100 bytes each carrying the secret, fed in odd-sized pieces.
    data = b"".join(f"{i:05d} {secret} {'y' * 72}\n".encode() for i in range(1000))
    for start_at in range(0, len(data), 777):
        await capture.feed(data[start_at : start_at + 777])
    capture.note("forgeline: warning: kept past the limit")
    summary = await capture.close()
    assert reached == [1] and summary.truncated and capture.truncated
    lines = stored.lines
    assert lines[-2].startswith("forgeline: log truncated") and "10000 bytes" in lines[-2]
    assert lines[-1] == "forgeline: warning: kept past the limit"
    assert all(secret not in line for line in lines)
    # Whole lines up to the limit, then the marker: nothing past it, nothing lost before it.
    kept = lines[:-2]
    assert kept == [f"{i:05d} *** {'y' * 72}" for i in range(len(kept))]
    assert sum(len(x) + 1 for x in kept) <= 10_000 < sum(len(x) + 1 for x in kept) + 84
    assert summary.byte_count == sum(len(x.encode()) + 1 for x in lines)
    assert (tmp_path / "spool.log").stat().st_size == summary.byte_count


async def test_an_endless_line_is_cut_and_capped(tmp_path: Path) -> None:
    stored = Stored()
    capture = LogCapture(stored, SecretMasker([]), tmp_path / "s.log", limit_bytes=200_000)
    for _ in range(100):  # 6.4 MB without a newline
        await capture.feed(b"x" * 65536)
    summary = await capture.close()
    assert summary.truncated and summary.byte_count < 200_000 + 300
    assert stored.lines[-1].startswith("forgeline: log truncated")
    assert {len(line) for line in stored.lines[:-1]} == {65536}


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 4096])
def test_carriage_returns_end_lines_however_the_output_is_cut(piece: int) -> None:
    data = b"a\rb\r\nc\n\rd\r\r\ne\x1b[2K\rprogress 50%\rprogress 100%\r\n\x0cf\xe2\x80\xa8g\r"
    splitter = LineSplitter()
    lines: list[str] = []
    for at in range(0, len(data), piece):
        lines += splitter.feed(data[at : at + piece])
    lines += splitter.flush()
    assert lines == [
        "a",
        "b",
        "c",
        "",
        "d",
        "",
        "e\x1b[2K",
        "progress 50%",
        "progress 100%",
        "\x0cf\u2028g",
    ]
    assert all("\r" not in line and "\n" not in line for line in lines)


# ------------------------------------------------------- runner: a stalled sink never holds it


class StalledSink:
    """A log store that takes the first write and then never answers."""

    def __init__(self) -> None:
        self.calls = 0
        self.first = asyncio.Event()

    async def __call__(self, data: bytes) -> None:
        self.calls += 1
        self.first.set()
        if self.calls > 1:
            await asyncio.Event().wait()


def flood_process(tmp_path: Path, timeout: float) -> StageProcess:
    root = tmp_path / "workspaces" / uuid.uuid4().hex
    return StageProcess(
        name=f"fl-{uuid.uuid4().hex[:12]}-flood-1",
        script=FLOOD,
        workspace=root,
        root=root,
        timeout_seconds=timeout,
    )


@pytest.fixture
async def sandbox(tmp_path: Path) -> Any:
    runner = sandbox_runner(tmp_path / "state")
    yield runner
    await runner.close()


async def test_timeout_ends_a_flood_whose_log_store_stalls(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    process = flood_process(tmp_path, timeout=2)
    outcome = await asyncio.wait_for(sandbox.run(process, StalledSink()), timeout=120)
    assert outcome.timed_out
    assert await process_gone(sandbox, process.name)


async def test_cancel_ends_a_flood_whose_log_store_stalls(
    sandbox: SandboxRunner, tmp_path: Path
) -> None:
    process = flood_process(tmp_path, timeout=120)
    sink = StalledSink()
    task = asyncio.create_task(sandbox.run(process, sink))
    await asyncio.wait_for(sink.first.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=60)
    assert await process_gone(sandbox, process.name)


# --------------------------------------------------------------------- real runs, real worker


async def set_limits(
    session_maker: async_sessionmaker[AsyncSession], pipeline_id: uuid.UUID, **limits: Any
) -> None:
    async with session_scope(session_maker) as session:
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        pipeline.config = {**(pipeline.config or {}), "limits": limits}


async def run_stages(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    client: Client,
    task_queue: str,
    tmp_path: Path,
    stages: list[dict[str, Any]],
    **limits: Any,
) -> tuple[uuid.UUID, str]:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, stages)
    if limits:
        await set_limits(session_maker, pipeline_id, **limits)
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    runner = sandbox_runner(tmp_path / "state")
    try:
        async with pipeline_worker(client, task_queue, settings, session_maker, runner):
            handle = await start(client, run, task_queue)
            try:
                result = await handle.result()
                status = result.status
            except WorkflowFailureError:
                status = "failed"
    finally:
        await runner.close()
    return run.id, status


def spool_files(settings: Settings) -> list[Path]:
    spool = settings.data_dir / "spool"
    return list(spool.iterdir()) if spool.exists() else []


async def test_a_flood_stops_at_the_log_limit_and_fails_the_stage(
    session_maker, settings, temporal_client, task_queue, tmp_path
) -> None:
    run_id, status = await run_stages(
        session_maker,
        settings,
        temporal_client,
        task_queue,
        tmp_path,
        [stage("loud", FLOOD, timeout_seconds=120), stage("after", "echo never", 1)],
        log_max_bytes=2_000_000,
    )
    assert status == "failed"
    rows = await executions(session_maker, run_id)
    assert [(r.stage_name, r.status) for r in rows] == [("after", "skipped"), ("loud", "failed")]
    row = rows[1]
    assert row.error == "stage stopped: its log reached the limit of 2000000 bytes"
    assert row.exit_code is None and row.finished_at is not None
    assert 1_900_000 < row.log_size_bytes < 2_000_000 + 300
    text = row.log_tail if row.log_object_key else await log_text(session_maker, row.id)
    assert text is not None
    assert text.rstrip("\n").splitlines()[-1].startswith("forgeline: log truncated")
    assert (await run_row(session_maker, run_id)).status == "failed"
    assert not [p for p in spool_files(settings) if str(row.id) in p.name]


async def test_the_operator_cap_wins_over_a_larger_pipeline_limit(
    session_maker, settings, temporal_client, task_queue, tmp_path
) -> None:
    capped = settings.model_copy(update={"stage_log_max_bytes": 300_000})
    run_id, status = await run_stages(
        session_maker,
        capped,
        temporal_client,
        task_queue,
        tmp_path,
        [stage("line", ENDLESS_LINE, timeout_seconds=120)],
        log_max_bytes=50_000_000,
    )
    assert status == "failed"
    (row,) = await executions(session_maker, run_id)
    assert row.error == "stage stopped: its log reached the limit of 300000 bytes"
    assert row.log_size_bytes < 300_000 + 300
    assert (await log_text(session_maker, row.id)).endswith("the rest of its output was dropped")


async def test_truncate_keeps_the_stage_running_and_says_so(
    session_maker, settings, temporal_client, task_queue, tmp_path
) -> None:
    script = ["yes 'before the end' | head -n 100000", "echo finished-ok"]
    run_id, status = await run_stages(
        session_maker,
        settings,
        temporal_client,
        task_queue,
        tmp_path,
        [stage("loud", script, timeout_seconds=120)],
        log_max_bytes=100_000,
        on_log_limit="truncate",
    )
    assert status == "success"
    (row,) = await executions(session_maker, run_id)
    assert row.status == "success" and row.exit_code == 0
    assert row.warnings == ["log truncated at 100000 bytes"]
    lines = (await log_text(session_maker, row.id)).splitlines()
    assert lines[-2].startswith("forgeline: log truncated")
    assert lines[-1] == "forgeline: warning: log truncated at 100000 bytes"
    assert "finished-ok" not in lines


async def test_cancel_ends_a_flooding_stage_and_closes_its_attempt(
    session_maker, settings, temporal_client, task_queue, tmp_path
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker, org.org_id, [stage("loud", FLOOD, timeout_seconds=300)]
    )
    # Truncated, so the stage keeps flooding past its limit until it is cancelled.
    await set_limits(session_maker, pipeline_id, log_max_bytes=3_000_000, on_log_limit="truncate")
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    runner = sandbox_runner(tmp_path / "state")
    try:
        async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
            handle = await start(temporal_client, run, task_queue)

            async def flooding() -> bool:
                rows = await executions(session_maker, run.id)
                return (
                    bool(rows)
                    and rows[0].status == "running"
                    and bool(await log_text(session_maker, rows[0].id))
                )

            await wait_for(flooding, timeout=60)
            await asyncio.sleep(1.5)  # well past the limit: the pump reads and drops
            await handle.cancel()
            with pytest.raises(WorkflowFailureError):
                await handle.result()

            async def closed() -> bool:
                (row,) = await executions(session_maker, run.id)
                return row.status == "cancelled" and row.finished_at is not None

            await wait_for(closed, timeout=60)
    finally:
        await runner.close()
    (row,) = await executions(session_maker, run.id)
    assert row.log_size_bytes <= 3_000_000 + 300
    assert await process_gone(runner, row.container_name or "")
    assert (await run_row(session_maker, run.id)).status == "cancelled"


async def test_timeout_ends_a_flooding_stage_and_closes_its_attempt(
    session_maker, settings, temporal_client, task_queue, tmp_path
) -> None:
    run_id, status = await run_stages(
        session_maker,
        settings,
        temporal_client,
        task_queue,
        tmp_path,
        [stage("loud", FLOOD, timeout_seconds=3)],
        log_max_bytes=3_000_000,
        on_log_limit="truncate",
    )
    assert status == "failed"
    (row,) = await executions(session_maker, run_id)
    assert row.status == "timed_out" and row.finished_at is not None
    assert row.warnings == ["log truncated at 3000000 bytes"]
    assert await process_gone(sandbox_runner(tmp_path / "probe"), row.container_name or "")


# ------------------------------------------------------------------------------- artifacts


ARTIFACTS = "mkdir -p out && for i in $(seq 1 30); do printf %04d $i > out/f$i.txt; done"


async def artifact_rows(session_maker: async_sessionmaker[AsyncSession], run_id: uuid.UUID) -> int:
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Artifact).where(Artifact.run_id == run_id)
        )
    return int(count or 0)


async def test_artifacts_past_the_file_limit_are_reported_on_the_stage(
    session_maker, settings, temporal_client, task_queue, tmp_path
) -> None:
    limited = settings.model_copy(update={"artifact_max_files": 20})
    run_id, status = await run_stages(
        session_maker,
        limited,
        temporal_client,
        task_queue,
        tmp_path,
        [stage("build", ARTIFACTS, artifact_paths=["out/**"])],
    )
    assert status == "success"
    (row,) = await executions(session_maker, run_id)
    assert row.status == "success" and len(row.warnings) == 1
    assert row.warnings[0].startswith("more than 20 files matched the artifact paths")
    log = await log_text(session_maker, row.id)
    assert f"forgeline: warning: {row.warnings[0]}" in log.splitlines()
    assert await artifact_rows(session_maker, run_id) == 20


async def test_artifacts_past_the_byte_limit_fail_the_stage_when_the_pipeline_says_so(
    session_maker, settings, temporal_client, task_queue, tmp_path
) -> None:
    limited = settings.model_copy(update={"artifact_max_bytes": 40})
    run_id, status = await run_stages(
        session_maker,
        limited,
        temporal_client,
        task_queue,
        tmp_path,
        [stage("build", ARTIFACTS, artifact_paths=["out/**"])],
        on_artifact_limit="fail",
    )
    assert status == "failed"
    (row,) = await executions(session_maker, run_id)
    assert row.status == "failed" and row.exit_code == 0
    assert row.error is not None and row.error.startswith("artifact limit exceeded: 20 artifact")
    assert "FORGELINE_ARTIFACT_MAX_BYTES" in row.warnings[0]
    assert await artifact_rows(session_maker, run_id) == 10  # 10 files of 4 bytes


# ------------------------------------------------------------------- the pipeline's limits


def _stage_row(**extra: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "name": "build",
        "stage_type": "build",
        "position": 0,
        "commands": [{"run": "make"}],
        "timeout_seconds": 60,
        **extra,
    }


@pytest.mark.parametrize(
    "limits",
    [
        {"log_max_bytes": -5, "on_log_limit": "explode", "on_artifact_limit": 3},
        {"log_max_bytes": "1000000", "on_log_limit": None, "on_artifact_limit": ["fail"]},
        {"log_max_bytes": True, "on_log_limit": "TRUNCATE", "on_artifact_limit": "Fail"},
        {"log_max_bytes": 1e9},
        "not an object",
    ],
)
def test_hostile_pipeline_limits_fall_back_to_the_defaults(limits: Any) -> None:
    spec = stage_spec(_stage_row(), {"config": {"limits": limits}})
    assert (spec.log_max_bytes, spec.on_log_limit, spec.on_artifact_limit) == (
        None,
        "fail",
        "warn",
    )


def test_pipeline_limits_are_read_and_change_the_spec_hash() -> None:
    plain = stage_spec(_stage_row(), {"config": {}})
    limited = stage_spec(
        _stage_row(),
        {
            "config": {
                "limits": {
                    "log_max_bytes": 1_000_000,
                    "on_log_limit": "truncate",
                    "on_artifact_limit": "fail",
                }
            }
        },
    )
    assert (limited.log_max_bytes, limited.on_log_limit, limited.on_artifact_limit) == (
        1_000_000,
        "truncate",
        "fail",
    )
    assert limited.spec_hash != plain.spec_hash
    # A spec at the defaults hashes as it did before the limits existed (reruns still reuse).
    before = plain.model_dump(
        mode="json",
        exclude={
            "spec_hash",
            "stage_id",
            "position",
            "log_max_bytes",
            "on_log_limit",
            "on_artifact_limit",
        },
    )
    assert (
        plain.spec_hash == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    )
