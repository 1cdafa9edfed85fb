"""Stage caches between runs of one pipeline (sandbox runner, local object store): saved after a
successful stage, restored by the next run (an exact hit, never saved again), a changed key that
misses but restores the newest entry under a restore-key prefix, and a failed stage that saves
nothing. Another pipeline never sees the entries."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from db.models.pipelines import PipelineStage
from db.session import session_scope
from forgeline.settings import Settings
from infra.storage import LocalObjectStore
from tests.factories import make_org
from tests.runs.helpers import (
    create_run,
    executions,
    log_text,
    make_pipeline,
    pipeline_worker,
    start,
)
from tests.runs.sandbox import sandbox_runner

pytestmark = pytest.mark.timeout(180)

# Counts the runs that found the cached file, and fails when asked to.
SCRIPT = (
    "n=$(cat deps/count 2>/dev/null || echo 0); mkdir -p deps; echo $((n + 1)) > deps/count; "
    'echo "count=$((n + 1))"; [ "${FAIL:-0}" = 0 ]'
)


def _cache_stage(runtime: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": "install",
        "position": 0,
        "commands": [{"run": SCRIPT}],
        "cache_paths": ["deps"],
        "runtime": runtime,
        **extra,
    }


async def _set_runtime(
    session_maker: async_sessionmaker[AsyncSession],
    pipeline_id: uuid.UUID,
    **columns: Any,
) -> None:
    async with session_scope(session_maker) as session:
        await session.execute(
            update(PipelineStage).where(PipelineStage.pipeline_id == pipeline_id).values(**columns)
        )


async def test_cache_hit_then_restore_key_after_a_key_change(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
    task_queue: str,
    tmp_path: Path,
) -> None:
    org = await make_org(session_maker)
    store = LocalObjectStore(tmp_path / "objects")
    key = {"cache_key": {"prefix": "deps-a", "restore_keys": ["deps-"]}}
    pipeline_id = await make_pipeline(session_maker, org.org_id, [_cache_stage(key)])
    other = await make_pipeline(session_maker, org.org_id, [_cache_stage(key)])

    async def run_once(pipeline: uuid.UUID) -> str:
        run = await create_run(session_maker, settings, org.org_id, pipeline)
        handle = await start(temporal_client, run, task_queue)
        await handle.result()
        rows = await executions(session_maker, run.id)
        assert len(rows) == 1
        return f"{rows[0].status}\n" + await log_text(session_maker, rows[0].id)

    runner = sandbox_runner(tmp_path / "state")
    async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner, store):
        first = await run_once(pipeline_id)
        assert first.startswith("success") and "count=1" in first
        assert "cache miss: deps-a-" in first and "cache saved: deps-a-" in first

        second = await run_once(pipeline_id)
        assert "count=2" in second and "cache hit: deps-a-" in second
        assert "cache saved" not in second  # an exact hit is never overwritten

        # Another pipeline with the same key starts cold.
        cold = await run_once(other)
        assert "count=1" in cold and "cache miss" in cold

        # The key changes: no exact entry, the restore-key prefix finds the newest one.
        await _set_runtime(
            session_maker,
            pipeline_id,
            runtime={"cache_key": {"prefix": "deps-b", "restore_keys": ["deps-"]}},
        )
        third = await run_once(pipeline_id)
        assert "cache restored from restore key: deps-a-" in third and "count=2" in third
        assert "cache saved: deps-b-" in third

        # A failed stage saves nothing (the next run still sees deps-b's count).
        await _set_runtime(
            session_maker,
            pipeline_id,
            runtime={"cache_key": {"prefix": "deps-c"}},
            environment={"FAIL": "1"},
        )
        failed = await run_once(pipeline_id)
        assert failed.startswith("failed") and "cache saved" not in failed
    entries = [k for k in store.list("caches") if k.endswith(".tar.gz")]
    assert sorted(k.split("/")[-1].split("-")[1] for k in entries) == ["a", "a", "b"]


def test_concurrent_saves_of_one_key_leave_one_whole_entry(tmp_path: Path) -> None:
    """Two legs (or a duplicate attempt) saving the same key at once: the entry that stays is
    whole, and restores."""
    from concurrent.futures import ThreadPoolExecutor

    from core.runs import stage_cache
    from workflows.stage_runtime_models import StageCache

    store = LocalObjectStore(tmp_path / "objects")
    cache = StageCache(paths=["deps"], scope=str(uuid.uuid4()), prefix="deps")
    workspaces = []
    for i in range(4):
        ws = tmp_path / f"ws{i}"
        (ws / "deps").mkdir(parents=True)
        (ws / "deps" / "blob").write_bytes(bytes([i]) * 200_000)
        workspaces.append(ws)
    key = stage_cache.cache_key(cache, workspaces[0])
    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(lambda ws: stage_cache.save(store, cache, key, ws, ws), workspaces))
    assert sizes == [200_000] * 4
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    restored = stage_cache.restore(store, cache, fresh, fresh)
    assert restored.exact and restored.bytes == 200_000
    blob = (fresh / "deps" / "blob").read_bytes()
    assert len(blob) == 200_000 and len(set(blob)) == 1  # one writer's whole file, not a mix
