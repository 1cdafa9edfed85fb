"""Builders for pipeline-run tests: project + pipeline + stages rows, a worker, run + wait."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.worker import Worker

from activities.deps import WorkerDeps
from activities.runs.registration import WORKFLOWS, build_activities, control_activities
from core.runs import repository, service
from core.runs.schemas import RunCreate
from db.models.accounts import Organization
from db.models.pipelines import Pipeline, PipelineRun, PipelineStage, StageExecution
from db.models.projects import Project
from db.session import session_scope
from forgeline.embedded.postgres import free_port
from forgeline.embedded.temporal import EmbeddedTemporal
from forgeline.settings import Settings
from forgeline.temporal_client import connect_temporal, workflow_runner
from infra.runners import Runner
from infra.storage import ObjectStore, create_object_store
from tests.factories import make_org
from tests.runs.sandbox import sandbox_runner


def stage(name: str, run: str | list[str], position: int = 0, **kw: Any) -> dict[str, Any]:
    commands = [run] if isinstance(run, str) else run
    return {
        "name": name,
        "position": position,
        "commands": [{"run": c} for c in commands],
        **kw,
    }


async def make_pipeline(
    session_maker: async_sessionmaker[AsyncSession],
    org_id: uuid.UUID,
    stages: list[dict[str, Any]],
    *,
    image: str | None = None,
    retry_policy: dict[str, Any] | None = None,
    concurrent_builds: int | None = None,
) -> uuid.UUID:
    suffix = uuid.uuid4().hex[:8]
    async with session_scope(session_maker) as session:
        if concurrent_builds is not None:
            org = await session.get(Organization, org_id)
            assert org is not None
            org.settings = {**(org.settings or {}), "concurrent_builds": concurrent_builds}
        project = Project(
            id=uuid.uuid4(),
            organization_id=org_id,
            name=f"P {suffix}",
            slug=f"p-{suffix}",
            project_type="api",
        )
        session.add(project)
        await session.flush()
        pipeline = Pipeline(
            id=uuid.uuid4(),
            project_id=project.id,
            organization_id=org_id,
            name="ci",
            config={"default_image": image} if image else {},
            retry_policy=retry_policy or {"initial_interval_seconds": 0.2},
        )
        session.add(pipeline)
        await session.flush()
        for spec in stages:
            session.add(
                PipelineStage(
                    id=uuid.uuid4(),
                    pipeline_id=pipeline.id,
                    stage_type=spec.pop("stage_type", "custom"),
                    timeout_seconds=spec.pop("timeout_seconds", 60),
                    **spec,
                )
            )
    return pipeline.id


async def create_run(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    org_id: uuid.UUID,
    pipeline_id: uuid.UUID,
    **body: Any,
) -> PipelineRun:
    async with session_scope(session_maker) as session:
        return await service.create_run(
            session,
            settings,
            organization_id=org_id,
            pipeline_id=pipeline_id,
            body=RunCreate(**body),
        )


async def start(
    client: Client, run: PipelineRun, task_queue: str, heartbeat_seconds: float = 1.0
) -> WorkflowHandle[Any, Any]:
    return await service.start_run_workflow(
        client, run, task_queue=task_queue, heartbeat_seconds=heartbeat_seconds
    )


@asynccontextmanager
async def pipeline_worker(
    client: Client,
    task_queue: str,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    runner: Runner,
    store: ObjectStore | None = None,
    *,
    sandboxed: bool = True,
) -> AsyncIterator[Worker]:
    """The control worker on `task_queue` and, beside it, a build worker on its own queue
    (`<task_queue>-builds`), which the runs' plans name."""
    build_queue = f"{task_queue}-builds"
    store = store or create_object_store(settings)
    control_settings = settings.model_copy(update={"build_task_queue": build_queue})
    deps = WorkerDeps(settings=control_settings, session_maker=session_maker, temporal=client)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=control_activities(deps, store=store),
        max_concurrent_activities=50,
        workflow_runner=workflow_runner(sandboxed),
    )
    built, _ = build_activities(settings, session_maker, runner=runner, store=store)
    builds = Worker(client, task_queue=build_queue, activities=built, max_concurrent_activities=50)
    async with worker, builds:
        yield worker


async def run_row(
    session_maker: async_sessionmaker[AsyncSession], run_id: uuid.UUID
) -> PipelineRun:
    async with session_maker() as session:
        run = await session.get(PipelineRun, run_id)
        assert run is not None
        return run


async def executions(
    session_maker: async_sessionmaker[AsyncSession], run_id: uuid.UUID
) -> list[StageExecution]:
    async with session_maker() as session:
        rows = await session.scalars(
            select(StageExecution)
            .where(StageExecution.run_id == run_id)
            .order_by(StageExecution.stage_name, StageExecution.attempt)
        )
        return list(rows)


def by_stage(rows: list[StageExecution]) -> dict[str, list[StageExecution]]:
    grouped: dict[str, list[StageExecution]] = {}
    for row in rows:
        grouped.setdefault(row.stage_name, []).append(row)
    return grouped


async def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.1) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await predicate():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def wait_for_log_line(
    session_maker: async_sessionmaker[AsyncSession],
    run_id: uuid.UUID,
    line: str,
    timeout: float = 60.0,
) -> None:
    """Until the run's first stage execution has logged `line` (the stage is mid-way)."""

    async def logged() -> bool:
        rows = await executions(session_maker, run_id)
        return bool(rows) and line in await log_text(session_maker, rows[0].id)

    await wait_for(logged, timeout=timeout)


async def log_text(session_maker: async_sessionmaker[AsyncSession], execution_id: uuid.UUID) -> str:
    async with session_maker() as session:
        lines = [line async for _, line in repository.log_lines_after(session, execution_id, -1)]
    return "\n".join(lines)


def parse_sse(text: str) -> list[tuple[str | None, str | None, str]]:
    """(id, event, data) of each event of a buffered server-sent-events body."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        ev_id = ev_type = None
        data: list[str] = []
        for line in block.splitlines():
            if line.startswith("id:"):
                ev_id = line[3:].strip()
            elif line.startswith("event:"):
                ev_type = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if ev_type or data:
            events.append((ev_id, ev_type, "\n".join(data)))
    return events


class Collected:
    """A stage's output as a runner streams it, kept in memory."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def __call__(self, chunk: bytes) -> None:
        self.data.extend(chunk)

    @property
    def text(self) -> str:
        return self.data.decode()


async def process_gone(runner: Runner, name: str) -> bool:
    if runner.kind == "docker":
        return runner.engine.get(name) is None  # type: ignore[attr-defined]
    marker = f"FORGELINE_PROCESS={name}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                return False
        except OSError:
            continue
    return True


async def run_pipeline(
    ctx: dict[str, Any],
    stages: list[dict[str, Any]],
    *,
    store: ObjectStore | None = None,
    sandboxed: bool = True,
    **body: Any,
) -> tuple[PipelineRun, Any]:
    """The pipeline of `stages` run once on the test's worker (see the `ctx` fixture); the run
    row and the workflow's result."""
    pipeline_id = await make_pipeline(
        ctx["session_maker"], ctx["org"].org_id, stages, image=ctx["image"]
    )
    run = await create_run(
        ctx["session_maker"], ctx["settings"], ctx["org"].org_id, pipeline_id, **body
    )
    async with pipeline_worker(
        ctx["client"],
        ctx["task_queue"],
        ctx["settings"],
        ctx["session_maker"],
        ctx["runner"],
        store,
        sandboxed=sandboxed,
    ):
        handle = await start(ctx["client"], run, ctx["task_queue"])
        result = await handle.result()
    return run, result


# An endless flood of short lines, and one of a single endless line.
FLOOD = "yes 'flood flood flood flood flood flood flood'"
ENDLESS_LINE = "tr '\\0' x < /dev/zero"


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
    """Every stage attempt's log spool left on disk (they live under `spool/<run id>/`)."""
    spool = settings.data_dir / "spool"
    return [p for p in spool.rglob("*") if p.is_file()] if spool.exists() else []


# Forty numbered lines, 0.1 s apart: a stage still running when a test strikes mid-way.
COUNT_SCRIPT = 'i=0; while [ $i -lt 40 ]; do echo "line-$i"; i=$((i+1)); sleep 0.1; done'


def spawn_worker(settings: Settings, task_queue: str, runner_kind: str) -> subprocess.Popen[bytes]:
    """A pipelines worker in a process of its own (tests.runs.worker_process), to SIGKILL."""
    assert settings.database_url is not None and settings.temporal_address is not None
    env = {
        **os.environ,
        "FORGELINE_ENVIRONMENT": "test",
        "FORGELINE_DATA_DIR": str(settings.data_dir),
        "FORGELINE_STORAGE_DIR": str(settings.objects_dir),
        "FORGELINE_DATABASE_URL": settings.database_url,
        "FORGELINE_TEMPORAL_ADDRESS": settings.temporal_address,
        "FORGELINE_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
        "FORGELINE_CONTAINER_RUNNER": runner_kind,
        "FORGELINE_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.runs.worker_process", task_queue],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def assert_contiguous(text: str, complete: bool) -> None:
    """COUNT_SCRIPT's lines in the log have no gap and no repeat (all 40 when `complete`)."""
    lines = [x for x in text.splitlines() if x.startswith("line-")]
    numbers = [int(x.removeprefix("line-")) for x in lines]
    assert numbers == list(range(len(numbers))), "gap or duplicate in the log"
    if complete:
        assert len(numbers) == 40


@asynccontextmanager
async def own_temporal(
    tmp_path: Path, settings: Settings
) -> AsyncIterator[tuple[EmbeddedTemporal, Client]]:
    """A Temporal server of the test's own (stopping it hits no other test), ready, and a client
    of it; stopped afterwards."""
    server = EmbeddedTemporal(tmp_path / "temporal", port=free_port(), ui_port=None)
    await asyncio.to_thread(server.start)
    try:
        await server.wait_ready()
        yield server, await connect_temporal(settings, target=server.address)
    finally:
        await asyncio.to_thread(server.stop)
