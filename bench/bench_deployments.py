"""Deployments: a tiny FROM-scratch busybox image deployed end to end (build excluded / included),
and the time from the first failing health check to a completed automatic rollback. Each figure
is printed next to a bare Temporal chain with as many activities as the deployment ran.

Run alone: `uv run python -m bench.run --only deployments --skip-baseline`.
Repeats: FORGELINE_BENCH_DEPLOY_REPEATS (5).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import httpx
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.worker import Worker

from activities.deployments.activities import DeploymentActivities
from activities.deployments.registration import WORKFLOWS
from bench.context import BenchContext, BenchRow
from core.deployments import repository, service
from db.models.accounts import Organization
from db.models.deployments import DeploymentHealthCheck
from db.models.projects import Environment, Project
from db.session import create_engine, create_session_maker, session_scope
from forgeline.embedded.postgres import free_port
from forgeline.settings import Settings
from forgeline.temporal_client import workflow_runner
from infra.deploy_containers import DockerReleaser
from infra.proxy_routes import embedded_caddy_command
from infra.storage import LocalObjectStore
from workflows.deployment import DeploymentWorkflow, deployment_workflow_id
from workflows.deployment_models import DeploymentResult, DeploymentSource

REPEATS = int(os.environ.get("FORGELINE_BENCH_DEPLOY_REPEATS", "5"))
ROOT = Path(__file__).resolve().parents[1]
HEALTH = {
    "health_check_path": "/",
    "health_check_passes": 3,
    "health_check_failure_threshold": 3,
    "health_check_interval_seconds": 0.1,
    "health_check_window_seconds": 20,
    "monitor_interval_seconds": 3600,
}
APP = """FROM scratch
COPY busybox /bin/busybox
COPY www /www
ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""
BROKEN = """FROM scratch
COPY busybox /bin/busybox
ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/bin"]
"""


def log(message: str) -> None:
    print(f"  deployments: {message}", file=sys.stderr, flush=True)


def _context(path: Path, dockerfile: str, body: str) -> Path:
    (path / "www").mkdir(parents=True, exist_ok=True)
    busybox = Path("/bin/busybox") if Path("/bin/busybox").exists() else Path("/usr/bin/busybox")
    (path / "busybox").write_bytes(busybox.read_bytes())
    (path / "busybox").chmod(0o755)
    (path / "www" / "index.html").write_text(body)
    (path / "Dockerfile").write_text(dockerfile)
    return path


def _docker() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except Exception:
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure-docker.sh")], check=True)
        client = docker.from_env()
    return client


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def _start_caddy(state_dir: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    """The reverse proxy Docker deployments are published through (as `make run` starts it):
    admin API and HTTP port on loopback, on free ports."""
    if shutil.which("caddy") is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure-caddy.sh")], check=True)
    admin_url = f"http://127.0.0.1:{free_port()}"
    http_port = free_port()
    command = embedded_caddy_command(
        admin_url=admin_url, http_host="127.0.0.1", http_port=http_port, state_dir=state_dir
    )
    assert command is not None, "caddy is not installed"
    env = {"HOME": str(state_dir), "XDG_CONFIG_HOME": str(state_dir), "PATH": "/usr/bin:/bin"}
    with (state_dir / "caddy.log").open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{admin_url}/config/", timeout=1).status_code == 200:
                return proc, admin_url, http_port
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"caddy did not start (see {state_dir / 'caddy.log'})")


async def run(ctx: BenchContext) -> list[BenchRow]:
    url = await ctx.database_url()
    work = ctx.work_dir / "deployments"
    caddy, admin_url, http_port = _start_caddy(work / "caddy")
    settings = Settings(
        environment="development",
        database_url=url,
        temporal_address=ctx.temporal_address,
        storage_dir=work / "objects",
        allow_local_repositories=True,
        log_level="WARNING",
        proxy_admin_url=admin_url,
        proxy_http_port=http_port,
        # Build contexts on this host must be inside the organization's local root.
        local_repository_roots=[work / "repos"],
    )
    engine = create_engine(settings)
    sessions = create_session_maker(engine)
    client = _docker()
    releaser = DockerReleaser(client)
    good = client.images.build(path=str(_context(work / "good", APP, "v1")), tag="fl-bench:good")
    bad = client.images.build(path=str(_context(work / "bad", BROKEN, "x")), tag="fl-bench:bad")
    del good, bad
    task_queue = f"bench-deploy-{uuid.uuid4()}"
    activities = DeploymentActivities(
        settings=settings,
        session_maker=sessions,
        temporal=ctx.client,
        docker_client=client,
        store=LocalObjectStore(settings.objects_dir),
    )
    async with session_scope(sessions) as session:
        org = Organization(id=uuid.uuid4(), name="Bench", slug=f"bench-{uuid.uuid4().hex[:8]}")
        session.add(org)
        await session.flush()
        project = Project(
            id=uuid.uuid4(),
            organization_id=org.id,
            name="bench",
            slug="bench",
            project_type="static_site",
        )
        session.add(project)
        await session.flush()
        env = Environment(
            id=uuid.uuid4(),
            project_id=project.id,
            name="staging",
            env_type="staging",
            provider="docker",
            config=HEALTH,
        )
        session.add(env)
    org_id, env_id = org.id, env.id

    async def deploy(source: DeploymentSource) -> tuple[float, DeploymentResult, uuid.UUID]:
        async with session_scope(sessions) as session:
            environment, proj = await repository.environment_for(session, org_id, env_id)
            row, inp = await service.create_deployment(
                session, environment, proj, source, triggered_by_user_id=None
            )
        started = time.perf_counter()
        await service.start_workflow(ctx.client, inp, task_queue=task_queue)
        handle = ctx.client.get_workflow_handle_for(
            DeploymentWorkflow.run, deployment_workflow_id(str(row.id))
        )
        result = await handle.result()
        return (time.perf_counter() - started) * 1000, result, row.id

    async def activity_count(deployment_id: uuid.UUID) -> int:
        """Activities the deployment ran; logs where its time went (scheduled → completed)."""
        handle = ctx.client.get_workflow_handle(deployment_workflow_id(str(deployment_id)))
        scheduled: dict[int, tuple[str, float]] = {}
        spent: dict[str, float] = {}
        async for event in handle.fetch_history_events():
            at = event.event_time.ToMilliseconds()
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[event.event_id] = (name, at)
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                name, t0 = scheduled[
                    event.activity_task_completed_event_attributes.scheduled_event_id
                ]
                spent[name] = spent.get(name, 0) + at - t0
        top = sorted(spent.items(), key=lambda kv: -kv[1])[:4]
        log(
            "  slowest: " + ", ".join(f"{k.removeprefix('deployment_')} {v:.0f} ms" for k, v in top)
        )
        return len(scheduled)

    rows: list[BenchRow] = []
    try:
        async with Worker(
            ctx.client,
            task_queue=task_queue,
            workflows=WORKFLOWS,
            activities=activities.all(),
            workflow_runner=workflow_runner(settings.workflow_sandbox),
        ):
            await deploy(DeploymentSource(version="warmup", image="fl-bench:good"))
            prebuilt: list[float] = []
            last_id = uuid.uuid4()
            for i in range(REPEATS):
                ms, result, last_id = await deploy(
                    DeploymentSource(version=f"pre-{i}", image="fl-bench:good")
                )
                assert result.status == "active", result.reason
                prebuilt.append(ms)
            n_pre = await activity_count(last_id)
            log(f"prebuilt deploy p50 {p50(prebuilt):.0f} ms ({n_pre} activities)")

            built: list[float] = []
            for i in range(REPEATS):
                context = _context(
                    work / "repos" / str(org_id) / f"src-{i}", APP, f"build {i} {uuid.uuid4()}"
                )
                ms, result, last_id = await deploy(
                    DeploymentSource(
                        version=f"b{i}", commit_sha=f"{i:07x}", context_dir=str(context)
                    )
                )
                assert result.status == "active", result.reason
                built.append(ms)
            n_built = await activity_count(last_id)
            log(f"build+deploy p50 {p50(built):.0f} ms ({n_built} activities)")

            rollback_total: list[float] = []
            rollback_after_fail: list[float] = []
            for i in range(REPEATS):
                await deploy(DeploymentSource(version=f"ok-{i}", image="fl-bench:good"))
                ms, result, dep_id = await deploy(
                    DeploymentSource(version=f"bad-{i}", image="fl-bench:bad")
                )
                done_at = time.time()
                assert result.status == "rolled_back", result.status
                async with sessions() as session:
                    first_fail = await session.scalar(
                        select(DeploymentHealthCheck.checked_at)
                        .where(
                            DeploymentHealthCheck.deployment_id == dep_id,
                            DeploymentHealthCheck.ok.is_(False),
                        )
                        .order_by(DeploymentHealthCheck.check_number)
                        .limit(1)
                    )
                assert first_fail is not None
                rollback_total.append(ms)
                rollback_after_fail.append((done_at - first_fail.timestamp()) * 1000)
            n_rb = await activity_count(dep_id)
            log(f"first failing check → rolled back p50 {p50(rollback_after_fail):.0f} ms")
    finally:
        releaser.remove_environment(str(env_id))
        await engine.dispose()
        caddy.terminate()
        caddy.wait(10)

    for n in sorted({n_pre, n_built, n_rb}):
        await ctx.chain(n, repeats=10)
    chain = ctx.baseline
    rows += [
        BenchRow(
            "deploy tiny image, build excluded",
            "latency p50",
            p50(prebuilt),
            baseline=chain[n_pre].p50_ms,
            note=f"{n_pre} activities; 3 health passes 100 ms apart; baseline chain({n_pre})",
        ),
        BenchRow(
            "deploy tiny image, build included",
            "latency p50",
            p50(built),
            baseline=chain[n_built].p50_ms,
            note=f"{n_built} activities; docker build FROM scratch; baseline chain({n_built})",
        ),
        BenchRow(
            "failing health check → rollback done",
            "latency p50",
            p50(rollback_after_fail),
            baseline=chain[n_rb].p50_ms,
            note=f"3 failed checks 100 ms apart, then swap back; baseline chain({n_rb})",
        ),
        BenchRow(
            "broken deploy, start → rolled back",
            "latency p50",
            p50(rollback_total),
            baseline=chain[n_rb].p50_ms,
            note=f"{n_rb} activities",
        ),
    ]
    return rows
