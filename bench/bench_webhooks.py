"""Forge webhooks: a signed GitHub push through the real API (uvicorn on loopback) to its 202, and
on to the first stage running (the stage attempt's `started_at`, a no-op stage on the sandbox
runner), each beside the bare Temporal chain measured interleaved in the same run: the 202 beside
starting a bare workflow (the one Temporal call the endpoint makes), the first stage beside a
chain of 3 activities (the path's activities before the stage: match triggers, start runs, the
stage itself).

Run alone: `uv run python -m bench.run --only webhooks --skip-baseline`.
Repeats: FORGELINE_BENCH_WEBHOOK_REPEATS (20).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deps import WorkerDeps
from activities.integrations.activities import IntegrationActivities
from activities.integrations.pull_requests import PullRequestActivities
from activities.integrations.registration import WORKFLOWS as INTEGRATION_WORKFLOWS
from activities.runs.registration import WORKFLOWS as RUN_WORKFLOWS
from activities.runs.registration import pipeline_activities
from api.app import create_app
from bench.baseline import percentile, run_chain
from bench.chain_workflow import ChainInput, ChainWorkflow, increment
from bench.context import BenchContext, BenchRow
from core.integrations.signatures import github_signature
from core.integrations.webhook_secrets import issue_secret
from db.models.accounts import Organization
from db.models.pipelines import Pipeline, PipelineRun, PipelineStage, StageExecution
from db.models.projects import Project, Repository
from db.session import create_engine, create_session_maker, session_scope
from forgeline.embedded.postgres import free_port
from forgeline.settings import INTEGRATIONS_TASK_QUEUE, Settings
from forgeline.temporal_client import connect_temporal, workflow_runner
from infra.runners import create_runner

REPEATS = int(os.environ.get("FORGELINE_BENCH_WEBHOOK_REPEATS", "20"))
WARMUPS = 2


def log(message: str) -> None:
    print(f"  webhooks: {message}", file=sys.stderr, flush=True)


def git_repository(root: Path) -> tuple[Path, str]:
    repo = root / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@example.com",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@example.com",
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }
    (repo / "README.md").write_text("bench\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", "-C", str(repo), *args], env=env, check=True)
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], env=env, check=True, capture_output=True
    ).stdout.decode()
    return repo, sha.strip()


async def connect(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings, repo: Path
) -> tuple[uuid.UUID, uuid.UUID, str]:
    """(pipeline, repository, webhook secret) of a project whose pipeline runs on every push."""
    org_id = uuid.uuid4()
    suffix = org_id.hex[:8]
    async with session_scope(session_maker) as session:
        session.add(
            Organization(
                id=org_id, name="bench", slug=f"bench-{suffix}", settings={"concurrent_builds": 100}
            )
        )
        project = Project(
            id=uuid.uuid4(),
            organization_id=org_id,
            name=f"hooks {suffix}",
            slug=f"hooks-{suffix}",
            project_type="api",
        )
        session.add(project)
        await session.flush()
        repository = Repository(
            id=uuid.uuid4(), project_id=project.id, provider="github", url=str(repo)
        )
        session.add(repository)
        secret = issue_secret(settings, repository).secret
        pipeline = Pipeline(
            id=uuid.uuid4(),
            project_id=project.id,
            organization_id=org_id,
            name="noop",
            triggers={"on_push": {"branches": ["main"]}},
        )
        session.add(pipeline)
        await session.flush()
        session.add(
            PipelineStage(
                id=uuid.uuid4(),
                pipeline_id=pipeline.id,
                name="noop",
                position=0,
                stage_type="custom",
                commands=[{"run": "true"}],
            )
        )
    return pipeline.id, repository.id, secret


class ApiThread:
    """The API under uvicorn in a thread (its own event loop), as a deployed API answers."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


async def first_stage_started(
    session_maker: async_sessionmaker[AsyncSession], pipeline_id: uuid.UUID, delivery: str
) -> tuple[datetime, uuid.UUID]:
    """The started_at of the delivery's run's first stage attempt, once it is there."""
    key = f"github:{delivery}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        async with session_maker() as session:
            found = (
                await session.execute(
                    select(StageExecution.started_at, PipelineRun.id)
                    .join(PipelineRun, PipelineRun.id == StageExecution.run_id)
                    .where(
                        PipelineRun.pipeline_id == pipeline_id,
                        PipelineRun.metadata_["forge"]["delivery_key"].astext == key,
                        StageExecution.started_at.is_not(None),
                    )
                    .order_by(StageExecution.started_at)
                    .limit(1)
                )
            ).one_or_none()
        if found is not None and found[0] is not None:
            return found[0], found[1]
        await asyncio.sleep(0.05)
    raise RuntimeError(f"delivery {delivery}: no stage started")


async def run_finished(session_maker: async_sessionmaker[AsyncSession], run_id: uuid.UUID) -> None:
    while True:
        async with session_maker() as session:
            status = await session.scalar(
                select(PipelineRun.status).where(PipelineRun.id == run_id)
            )
        if status in ("success", "failed", "cancelled"):
            return
        await asyncio.sleep(0.05)


async def breakdown(client: Client, delivery: str, run_id: uuid.UUID, sent_at: datetime) -> str:
    """When each step of one delivery's path happened, in ms after the request was sent."""
    sent = sent_at.timestamp() * 1000
    parts: list[str] = []
    for workflow_id in (f"webhook-github-{delivery}", f"pipeline-run-{run_id}"):
        scheduled: dict[int, str] = {}
        async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
            at = event.event_time.ToDatetime().timestamp() * 1000 - sent
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                parts.append(f"{workflow_id.split('-')[0]} started {at:.0f}")
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[event.event_id] = name
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                ref = event.activity_task_completed_event_attributes.scheduled_event_id
                parts.append(f"{scheduled.get(ref, '?')} done {at:.0f}")
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                ref = event.activity_task_started_event_attributes.scheduled_event_id
                parts.append(f"{scheduled.get(ref, '?')} started {at:.0f}")
    return "; ".join(parts)


async def start_only(client: Client, queue: str) -> float:
    """ms to start a bare workflow (no wait for its result): the endpoint's Temporal call."""
    started = time.perf_counter()
    handle = await client.start_workflow(
        ChainWorkflow.run, ChainInput(steps=1), id=f"bench-start-{uuid.uuid4()}", task_queue=queue
    )
    elapsed = (time.perf_counter() - started) * 1000
    await handle.result()
    return elapsed


async def run(ctx: BenchContext) -> list[BenchRow]:
    url = await ctx.database_url()
    settings = Settings(
        data_dir=ctx.work_dir / "webhooks-data",
        database_url=url,
        temporal_address=ctx.temporal_address,
        log_level="WARNING",
        allow_local_repositories=True,
    )
    engine = create_engine(settings, url=url)
    session_maker = create_session_maker(engine)
    # The product's client (payload codec included), as the API in this run uses; the bare
    # baselines go through it too, so both sides pay the same encoding.
    client = await connect_temporal(settings)
    repo, sha = git_repository(ctx.work_dir / "webhooks-repo")
    pipeline_id, repository_id, secret = await connect(session_maker, settings, repo)
    runs_queue = f"bench-webhook-runs-{uuid.uuid4()}"
    chain_queue = f"bench-webhook-chain-{uuid.uuid4()}"
    deps = WorkerDeps(
        settings.model_copy(update={"build_task_queue": runs_queue}), session_maker, client
    )
    runner = create_runner(settings.model_copy(update={"container_runner": "sandbox"}))
    run_activities, _ = pipeline_activities(deps, runner=runner)
    integrations = IntegrationActivities(settings, session_maker, client, run_task_queue=runs_queue)
    pull_requests = PullRequestActivities(settings, session_maker, client)
    accepted: list[float] = []
    to_stage: list[float] = []
    bare_start: list[float] = []
    bare_chain: list[float] = []
    try:
        async with (
            Worker(
                client,
                task_queue=INTEGRATIONS_TASK_QUEUE,
                workflows=INTEGRATION_WORKFLOWS,
                activities=[
                    integrations.match_triggers,
                    integrations.compute_changed_paths,
                    integrations.start_runs,
                    integrations.start_scheduled_run,
                    integrations.record_delivery_outcome,
                    integrations.record_pull_request,
                    integrations.report_commit_status,
                    pull_requests.summarize_pull_request,
                    pull_requests.publish_pull_request_comment,
                ],
                workflow_runner=workflow_runner(settings.workflow_sandbox),
            ),
            Worker(
                client,
                task_queue=runs_queue,
                workflows=RUN_WORKFLOWS,
                activities=run_activities,
                max_concurrent_activities=20,
                workflow_runner=workflow_runner(settings.workflow_sandbox),
            ),
            Worker(
                client,
                task_queue=chain_queue,
                workflows=[ChainWorkflow],
                activities=[increment],
            ),
        ):
            with ApiThread(settings) as api:
                async with httpx.AsyncClient(base_url=api, timeout=30) as http:
                    for i in range(REPEATS + WARMUPS):
                        delivery = str(uuid.uuid4())
                        body = json.dumps(
                            {
                                "ref": "refs/heads/main",
                                "before": "0" * 40,
                                "after": sha,
                                "repository": {"full_name": "bench/repo", "clone_url": str(repo)},
                            }
                        ).encode()
                        headers = {
                            "Content-Type": "application/json",
                            "X-GitHub-Event": "push",
                            "X-GitHub-Delivery": delivery,
                            "X-Hub-Signature-256": github_signature(secret, body),
                        }
                        sent_at = datetime.now().astimezone()
                        t0 = time.perf_counter()
                        response = await http.post(
                            f"/v1/webhooks/github?repository={repository_id}",
                            content=body,
                            headers=headers,
                        )
                        answered = (time.perf_counter() - t0) * 1000
                        if response.status_code != 202:
                            raise RuntimeError(f"webhook answered {response.status_code}")
                        started_at, run_id = await first_stage_started(
                            session_maker, pipeline_id, delivery
                        )
                        staged = (started_at - sent_at).total_seconds() * 1000
                        await run_finished(session_maker, run_id)
                        start_ms = await start_only(client, chain_queue)
                        chain_ms = await run_chain(client, 3, chain_queue)
                        if i == REPEATS + WARMUPS - 1:
                            log("path of the last delivery (ms after sending): ")
                            log(await breakdown(client, delivery, run_id, sent_at))
                        if i >= WARMUPS:
                            accepted.append(answered)
                            to_stage.append(staged)
                            bare_start.append(start_ms)
                            bare_chain.append(chain_ms)
    finally:
        await engine.dispose()
    log(
        f"202 p50 {statistics.median(accepted):.0f} ms (bare start "
        f"{statistics.median(bare_start):.0f}); first stage running p50 "
        f"{statistics.median(to_stage):.0f} ms (bare 3-chain {statistics.median(bare_chain):.0f})"
    )
    rows = []
    for label, samples, base, note in (
        ("webhook -> 202", accepted, bare_start, "bare workflow start, interleaved"),
        ("webhook -> first stage running", to_stage, bare_chain, "bare 3-chain, interleaved"),
    ):
        rows.append(
            BenchRow(
                label,
                "latency p50",
                statistics.median(samples),
                baseline=statistics.median(base),
                note=note,
            )
        )
        rows.append(
            BenchRow(
                label, "latency p95", percentile(samples, 0.95), baseline=percentile(base, 0.95)
            )
        )
    return rows
