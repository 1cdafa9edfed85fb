"""A run's variables: taken when the run starts, the same for all its stages, cleared when it
finishes; and a stage whose attempt row cannot be opened does not keep running."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from activities.runs.attempts import run_workspace
from activities.runs.run_variables import RunVariablesCache, stage_variables
from activities.runs.stage_execution import StageActivities
from db.models.pipelines import Pipeline
from db.models.projects import Project
from db.session import session_scope
from forgeline import environment_variables as env_vars
from infra.runners.base import StageProcess
from infra.storage import LocalObjectStore
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


async def set_project_variable(session_maker, settings, pipeline_id, value: str) -> None:
    async with session_scope(session_maker) as session:
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        project = await session.get(Project, pipeline.project_id)
        assert project is not None
        project.config = {
            **(project.config or {}),
            "environment_variables": env_vars.seal(
                [
                    {"name": "GREETING", "value": value},
                    {"name": "TOKEN", "value": f"token-{value}", "secret": True},
                ],
                settings=settings,
            ),
        }


async def stage_logs(session_maker, run_id: uuid.UUID) -> dict[str, str]:
    return {
        e.stage_name: await log_text(session_maker, e.id)
        for e in await executions(session_maker, run_id)
    }


async def test_every_stage_sees_the_variables_the_run_started_with(
    session_maker, settings, temporal_client, task_queue, tmp_path: Path
) -> None:
    """Edited while the run runs, a project's variables reach the next run, not the stages left
    in this one; the snapshot is gone from the run's row once it finishes."""
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [
            stage(
                # The gate is a file in the run's workspace (the only host path a stage sees).
                "first",
                'echo "first=$GREETING"; while [ ! -e edited ]; do sleep 0.05; done',
                0,
            ),
            stage("second", ['echo "second=$GREETING"', 'echo "token=$TOKEN"'], 1),
        ],
    )
    await set_project_variable(session_maker, settings, pipeline_id, "before")
    runner = sandbox_runner(tmp_path / "state")
    async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
        run = await create_run(session_maker, settings, org.org_id, pipeline_id)
        handle = await start(temporal_client, run, task_queue)

        async def first_running() -> bool:
            return any(e.stage_name == "first" for e in await executions(session_maker, run.id))

        await wait_for(first_running)
        await set_project_variable(session_maker, settings, pipeline_id, "after")
        (run_workspace(settings, str(run.id)) / "edited").touch()
        assert (await handle.result()).status == "success"
        later = await create_run(session_maker, settings, org.org_id, pipeline_id)
        # Its gate is open from the start.
        run_workspace(settings, str(later.id)).mkdir(parents=True)
        (run_workspace(settings, str(later.id)) / "edited").touch()
        assert (await (await start(temporal_client, later, task_queue)).result()).status == (
            "success"
        )
    logs = await stage_logs(session_maker, run.id)
    assert "first=before" in logs["first"] and "second=before" in logs["second"]
    # The secret of the snapshot is masked like any other.
    assert "token=***" in logs["second"] and "token-before" not in logs["second"]
    later_logs = await stage_logs(session_maker, later.id)
    assert "first=after" in later_logs["first"] and "second=after" in later_logs["second"]
    for finished in (run, later):
        assert (await run_row(session_maker, finished.id)).variables_snapshot is None


def test_stage_variables_take_the_environment_from_the_snapshot_only(settings) -> None:
    """Precedence run > environment > project; an environment outside the run's project (not in
    its snapshot) contributes nothing."""
    env_id = str(uuid.uuid4())
    snapshot = {
        "run": None,
        "project": [{"name": "A", "secret": False, "value": "project"}],
        "environments": {env_id: [{"name": "A", "secret": False, "value": "environment"}]},
        "environment_id": None,
    }
    assert stage_variables(settings, snapshot, env_id).env == {"A": "environment"}
    assert stage_variables(settings, snapshot, None).env == {"A": "project"}
    assert stage_variables(settings, snapshot, str(uuid.uuid4())).env == {"A": "project"}


def test_the_cache_keeps_the_most_recent_runs() -> None:
    cache = RunVariablesCache(size=2)
    cache.put("a", {"run": "a"})
    cache.put("b", {"run": "b"})
    assert cache.get("a") == {"run": "a"}  # now the most recent
    cache.put("c", {"run": "c"})
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    cache.drop("a")
    assert cache.get("a") is None


async def test_a_failed_opening_kills_the_stage_process(
    settings, session_maker, tmp_path: Path
) -> None:
    """The process starts while the attempt's row is written; when that write fails, the
    process group is killed at once and the failure raised (the attempt is retried)."""
    runner = sandbox_runner(tmp_path / "state")
    activities = StageActivities(
        settings, session_maker, LocalObjectStore(tmp_path / "objects"), runner
    )
    pid_file = tmp_path / "ws" / "started"
    process = StageProcess(
        name=f"opening-{uuid.uuid4().hex[:8]}",
        script="touch started; sleep 30",
        workspace=tmp_path / "ws",
        timeout_seconds=60,
        image=None,
        env={},
    )

    async def failing_opening() -> None:
        while not pid_file.exists():
            await asyncio.sleep(0.02)
        raise ConnectionError("database went away")

    opening = asyncio.ensure_future(failing_opening())

    async def ignore(_: bytes) -> None:
        return None

    with pytest.raises(ConnectionError):
        await activities._run_while_opening(process, ignore, opening)  # type: ignore[arg-type]
    # Killed with its group, and reaped: not left to sleep out its 30 seconds.
    assert await process_gone(runner, process.name)
