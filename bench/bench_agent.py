"""Agent: pipeline generation with the built-in planner over the whole fixture corpus (26 repos).

Per-task latency (sequential) and tasks/minute (concurrent) of the real AgentTaskWorkflow (clone,
planner turns, one activity per tool call, Postgres projections, YAML validation with actionlint
and the GitLab schema), each next to a bare Temporal chain with the same number of activities
measured in the same run.

Run alone: `uv run python -m bench.run --only agent --skip-baseline`.
Knobs: FORGELINE_BENCH_AGENT_ROUNDS (2 passes over the corpus for throughput),
FORGELINE_BENCH_AGENT_CONCURRENCY (8).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid

from cryptography.fernet import Fernet
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from activities.agent.activities import AgentActivities
from bench.baseline import measure_chain, percentile
from bench.context import BenchContext, BenchRow
from db.models.accounts import Organization
from db.models.agent import AgentTask
from db.models.projects import Project, Repository
from db.session import create_engine, create_session_maker, session_scope
from forgeline.settings import Settings
from forgeline.temporal_client import workflow_runner
from infra.storage import LocalObjectStore
from tests.agent.corpus import CORPUS, write_corpus
from workflows.agent_models import AgentTaskWorkflowInput
from workflows.agent_task import AgentTaskWorkflow

ROUNDS = int(os.environ.get("FORGELINE_BENCH_AGENT_ROUNDS", "2"))
CONCURRENCY = int(os.environ.get("FORGELINE_BENCH_AGENT_CONCURRENCY", "8"))


def log(message: str) -> None:
    print(f"  agent: {message}", file=sys.stderr, flush=True)


async def _activity_count(client: Client, workflow_id: str) -> int:
    handle = client.get_workflow_handle(workflow_id)
    scheduled = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    return len([e async for e in handle.fetch_history_events() if e.event_type == scheduled])


async def run(ctx: BenchContext) -> list[BenchRow]:
    work = ctx.work_dir / "agent"
    repos = write_corpus(work / "corpus", git=True)
    settings = Settings(
        environment="development",
        database_url=await ctx.database_url(),
        temporal_address=ctx.temporal_address,
        data_dir=work / "data",
        storage_dir=work / "objects",
        encryption_keys=Fernet.generate_key().decode(),
        allow_local_repositories=True,
        log_level="WARNING",
    )
    engine = create_engine(settings)
    sessions = create_session_maker(engine)
    org_id = uuid.uuid4()
    projects: dict[str, uuid.UUID] = {}
    async with session_scope(sessions) as session:
        session.add(Organization(id=org_id, name="Bench", slug=f"bench-{org_id.hex[:8]}"))
        await session.flush()
        for name, path in repos.items():
            pid = uuid.uuid4()
            session.add(
                Project(
                    id=pid,
                    organization_id=org_id,
                    name=name,
                    slug=f"{name}-{pid.hex[:6]}",
                    project_type="spa",
                )
            )
            await session.flush()
            session.add(Repository(project_id=pid, provider="local", url=str(path)))
            projects[name] = pid

    async def one(name: str, queue: str) -> tuple[float, str, str]:
        task_id = uuid.uuid4()
        async with session_scope(sessions) as session:
            session.add(
                AgentTask(
                    id=task_id,
                    organization_id=org_id,
                    project_id=projects[name],
                    task_type="generate_pipeline",
                    input_data={},
                )
            )
        started = time.perf_counter()
        result = await ctx.client.execute_workflow(
            AgentTaskWorkflow.run,
            AgentTaskWorkflowInput(
                task_id=task_id,
                organization_id=org_id,
                project_id=projects[name],
                task_type="generate_pipeline",
            ),
            id=f"agent-task-{task_id}",
            task_queue=queue,
        )
        elapsed = (time.perf_counter() - started) * 1000
        if result.status != "completed":
            raise RuntimeError(f"{name}: {result.error}")
        return elapsed, f"agent-task-{task_id}", str(result.output.get("detected_framework"))

    queue = f"bench-agent-{uuid.uuid4()}"
    acts = AgentActivities(settings, sessions, LocalObjectStore(settings.objects_dir), None)
    rows: list[BenchRow] = []
    try:
        async with Worker(
            ctx.client,
            task_queue=queue,
            workflows=[AgentTaskWorkflow],
            activities=acts.activities,
            max_concurrent_activities=CONCURRENCY * 2,
            workflow_runner=workflow_runner(settings.workflow_sandbox),
        ):
            await one("static-html", queue)  # warm-up
            latencies: list[float] = []
            counts: list[int] = []
            for sample in CORPUS:
                elapsed, wf_id, framework = await one(sample.name, queue)
                latencies.append(elapsed)
                counts.append(await _activity_count(ctx.client, wf_id))
                log(f"{sample.name}: {framework} in {elapsed:.0f} ms")
            total = ROUNDS * len(CORPUS)
            gate = asyncio.Semaphore(CONCURRENCY)

            async def gated(name: str) -> None:
                async with gate:
                    await one(name, queue)

            started = time.perf_counter()
            await asyncio.gather(*(gated(s.name) for _ in range(ROUNDS) for s in CORPUS))
            per_minute = total / (time.perf_counter() - started) * 60
    finally:
        await engine.dispose()

    n = round(statistics.median(counts))
    log(f"median {n} activities per task (min {min(counts)}, max {max(counts)})")
    chain = await measure_chain(
        ctx.client, n, 10, concurrency=CONCURRENCY, throughput_workflows=total
    )
    p50, p95 = statistics.median(latencies), percentile(latencies, 0.95)
    note = f"{len(CORPUS)} repos, {n} activities/task"
    rows.append(BenchRow("agent generate (planner)", "latency p50", p50, "ms", chain.p50_ms, note))
    rows.append(BenchRow("agent generate (planner)", "latency p95", p95, "ms", chain.p95_ms, note))
    assert chain.throughput_wps is not None
    rows.append(
        BenchRow(
            "agent generate (planner)",
            "tasks/minute",
            per_minute,
            "/min",
            chain.throughput_wps * 60,
            f"{total} tasks, {CONCURRENCY} in flight",
        )
    )
    return rows
