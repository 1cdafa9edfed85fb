"""Build hosts: stages run in worker processes of their own (`worker.py --build-host`) that hold no
keys; a build host killed mid-stage loses nothing (the other finishes the stage); secrets reach
them only inside encrypted payloads."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from activities.deps import WorkerDeps
from activities.runs.registration import WORKFLOWS, control_activities
from db.models.pipelines import Pipeline
from db.models.projects import Project
from db.roles import BUILD_ROLE
from db.session import session_scope
from forgeline import environment_variables as env_vars
from forgeline.embedded.children import build_host_environment
from forgeline.payload_codec import (
    ENCODING,
    EncryptionCodec,
    PayloadKeyError,
    encrypted_data_converter,
    generate_payload_key,
    parse_payload_keys,
)
from forgeline.settings import Settings
from forgeline.temporal_client import workflow_runner
from infra.runners.docker_runner import DockerRunner
from tests.factories import make_org
from tests.runs.helpers import (
    COUNT_SCRIPT,
    assert_contiguous,
    by_stage,
    create_run,
    executions,
    log_text,
    make_pipeline,
    pipeline_worker,
    run_row,
    stage,
    start,
    wait_for_log_line,
)

ROOT = Path(__file__).resolve().parents[2]
# Names a build host's environment must never carry.
KEY_NAMES = ("ENCRYPTION_KEYS", "STRIPE", "ANTHROPIC")

pytestmark = pytest.mark.timeout(300)


def host_environment(settings: Settings, build_queue: str, image: str) -> dict[str, str]:
    """What `make run` gives its build host, from a control worker's environment that holds
    every key (Fernet, Stripe, Anthropic). Stages run in Docker containers (`image`)."""
    control = {
        **os.environ,
        "FORGELINE_ENVIRONMENT": "test",
        "FORGELINE_DATA_DIR": str(settings.data_dir),
        "FORGELINE_STORAGE_DIR": str(settings.objects_dir),
        "FORGELINE_DATABASE_URL": settings.database_url or "",
        "FORGELINE_TEMPORAL_ADDRESS": settings.temporal_address or "",
        "FORGELINE_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
        "STRIPE_API_KEY": "sk_test_never_on_a_build_host",
        "FORGELINE_ANTHROPIC_API_KEY": "sk-ant-never-on-a-build-host",
        "FORGELINE_BUILD_TASK_QUEUE": build_queue,
        "FORGELINE_CONTAINER_RUNNER": "docker",
        "FORGELINE_DEFAULT_STAGE_IMAGE": image,
        "FORGELINE_LOG_LEVEL": "WARNING",
    }
    return build_host_environment(control, settings.build_database_url)


def spawn_build_host(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "worker.py"), "--build-host"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@asynccontextmanager
async def control_worker(
    client: Client,
    task_queue: str,
    build_queue: str,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[Worker]:
    """The control side only: its plans send every stage to `build_queue`."""
    deps = WorkerDeps(
        settings=settings.model_copy(update={"build_task_queue": build_queue}),
        session_maker=session_maker,
        temporal=client,
    )
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=control_activities(deps),
        workflow_runner=workflow_runner(),
    ) as worker:
        yield worker


@pytest.fixture
def build_queue() -> str:
    return f"builds-{uuid.uuid4()}"


@pytest.fixture
def build_hosts(
    settings: Settings, build_queue: str, busybox_image: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = host_environment(settings, build_queue, busybox_image)
    hosts = [spawn_build_host(env), spawn_build_host(env)]
    try:
        yield hosts
    finally:
        for host in hosts:
            if host.poll() is None:
                host.kill()
            host.wait()


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(): v.decode(errors="replace") for k, _, v in pairs}


async def running_host(client: Client, workflow_id: str) -> int:
    """The pid of the build host whose worker holds the stage's activity (its identity is
    `pid@hostname`)."""
    for _ in range(200):
        desc = await client.get_workflow_handle(workflow_id).describe()
        pending = desc.raw_description.pending_activities
        if pending and pending[0].last_worker_identity:
            return int(pending[0].last_worker_identity.split("@", 1)[0])
        await asyncio.sleep(0.05)
    raise AssertionError("no build host picked the stage up")


async def test_sigkill_a_build_host_mid_stage_the_other_finishes_it(
    session_maker, settings, temporal_client, task_queue, build_queue, build_hosts
) -> None:
    """Two build hosts on one queue; the one running the stage is SIGKILLed mid-stage: the
    stage's heartbeat times out and the other host runs it again to success. One row per
    attempt, one success, and the successful attempt's log holds every line once."""
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [stage("count", COUNT_SCRIPT, 0), stage("after", "echo after", 1)],
    )
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    async with control_worker(temporal_client, task_queue, build_queue, settings, session_maker):
        handle = await start(temporal_client, run, task_queue, heartbeat_seconds=1.0)

        await wait_for_log_line(session_maker, run.id, "line-5", timeout=90)
        victim_pid = await running_host(temporal_client, handle.id)
        (victim,) = [h for h in build_hosts if h.pid == victim_pid]
        (survivor,) = [h for h in build_hosts if h.pid != victim_pid]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        result = await asyncio.wait_for(handle.result(), 120)
        assert survivor.poll() is None, "the other build host stays up"
    assert result.status == "success"
    assert (await run_row(session_maker, run.id)).status == "success"
    rows = by_stage(await executions(session_maker, run.id))
    assert [(r.attempt, r.status) for r in rows["count"]] == [(1, "failed"), (2, "success")]
    assert rows["count"][0].error == "worker lost during the attempt"
    assert_contiguous(await log_text(session_maker, rows["count"][0].id), complete=False)
    assert_contiguous(await log_text(session_maker, rows["count"][1].id), complete=True)
    assert [(r.attempt, r.status) for r in rows["after"]] == [(1, "success")]


async def test_a_build_host_holds_no_keys(settings, build_queue, build_hosts) -> None:
    """Started as `make run` starts it, from an environment that holds every key: none of them
    reaches the build host's process; it has its payload key, the build queue and the build
    database role (which the kill test's hosts wrote their attempts with)."""
    assert settings.build_database_url, "the test database has its build role"
    for host in build_hosts:
        env = environ(host.pid)
        held = [name for name in env if any(key in name.upper() for key in KEY_NAMES)]
        assert held == []
        assert make_url(env["FORGELINE_DATABASE_URL"]).username == BUILD_ROLE
        assert "DATABASE_URL" not in env
        assert env["FORGELINE_BUILD_HOST"] == "true"
        assert env["FORGELINE_BUILD_TASK_QUEUE"] == build_queue
        assert env["FORGELINE_PAYLOAD_KEYS"]


def test_a_production_build_host_refuses_keys(settings) -> None:
    """Given the Fernet keys (or a Stripe key) in production, a build host does not start."""
    production = {
        "FORGELINE_ENVIRONMENT": "production",
        "FORGELINE_DATABASE_URL": settings.database_url or "",
        "FORGELINE_TEMPORAL_ADDRESS": "127.0.0.1:1",
        "FORGELINE_PAYLOAD_KEYS": generate_payload_key(),
        "FORGELINE_DATA_DIR": str(settings.data_dir),
        "PATH": os.environ["PATH"],
    }
    for extra in (
        {"FORGELINE_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value()},
        {"STRIPE_API_KEY": "sk_live_x"},
        {"ANTHROPIC_API_KEY": "sk-ant-x"},
    ):
        done = subprocess.run(
            [sys.executable, str(ROOT / "worker.py"), "--build-host"],
            cwd=ROOT,
            env={**production, **extra},
            capture_output=True,
            timeout=60,
        )
        assert done.returncode != 0
        assert b"a build host must not be given" in done.stderr
    with pytest.raises(ValueError, match="must not be given FORGELINE_ENCRYPTION_KEYS"):
        Settings(
            environment="production",
            build_host=True,
            database_url="postgresql://x/y",
            temporal_address="127.0.0.1:1",
            payload_keys=generate_payload_key(),
            encryption_keys=settings.encryption_keys,
        )


async def set_secret(session_maker, settings, pipeline_id: uuid.UUID, value: str) -> None:
    async with session_scope(session_maker) as session:
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        project = await session.get(Project, pipeline.project_id)
        assert project is not None
        project.config = {
            **(project.config or {}),
            "environment_variables": env_vars.seal(
                [{"name": "DEPLOY_TOKEN", "value": value, "secret": True}], settings=settings
            ),
        }


async def history_payloads(client: Client, workflow_id: str) -> tuple[bytes, list[Payload]]:
    """The run's history as the server stores it (raw bytes), and every payload in it."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    raw = history.to_json().encode()
    found: list[Payload] = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            found.extend(event.activity_task_scheduled_event_attributes.input.payloads)
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            found.extend(event.activity_task_completed_event_attributes.result.payloads)
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            # A local activity's result (prepare_run's plan carries the run's variables); the
            # marker's own bookkeeping ("data": activity type, attempt) is the SDK's, not ours.
            details = event.marker_recorded_event_attributes.details
            if "result" in details:
                found.extend(details["result"].payloads)
    return raw, found


async def test_secrets_reach_the_stage_only_encrypted(
    session_maker, settings, temporal_client, task_queue, docker_engine, busybox_image
) -> None:
    """The stage gets its secret (masked in its log); the server's history holds it only as
    ciphertext; a client with another key fails clearly, and a rotated key list still reads."""
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [stage("use", 'test "$DEPLOY_TOKEN" = "' + secret + '" && echo "token=$DEPLOY_TOKEN"')],
    )
    await set_secret(session_maker, settings, pipeline_id, secret)
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    runner = DockerRunner(docker_engine, busybox_image)
    async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
        handle = await start(temporal_client, run, task_queue)
        assert (await handle.result()).status == "success"
    (execution,) = await executions(session_maker, run.id)
    assert "token=***" in await log_text(session_maker, execution.id)

    raw, payloads = await history_payloads(temporal_client, handle.id)
    assert secret.encode() not in raw
    assert payloads and all(p.metadata["encoding"] == ENCODING for p in payloads)
    # The session's key opens them: the stage's input carried the secret, sealed.
    codec = temporal_client.data_converter.payload_codec
    assert codec is not None
    opened = await codec.decode(payloads)
    assert any(secret.encode() in p.data for p in opened)

    stranger_keys = parse_payload_keys(generate_payload_key())
    with pytest.raises(PayloadKeyError, match="not among FORGELINE_PAYLOAD_KEYS"):
        await EncryptionCodec(stranger_keys).decode(payloads)
    stranger = await Client.connect(
        temporal_client.service_client.config.target_host,
        data_converter=encrypted_data_converter(stranger_keys),
    )
    with pytest.raises(Exception) as failure:
        await stranger.get_workflow_handle(handle.id).result()
    assert not isinstance(failure.value, WorkflowFailureError)
    assert "not among FORGELINE_PAYLOAD_KEYS" in repr(failure.value) + repr(failure.value.__cause__)
    # Rotation: a new key first, the old one still listed, reads what the old one sealed.
    session_keys = parse_payload_keys(os.environ["FORGELINE_PAYLOAD_KEYS"])
    rotated = EncryptionCodec([*stranger_keys, *session_keys])
    assert await rotated.decode(payloads) == opened
    tampered = Payload(metadata=dict(payloads[0].metadata), data=payloads[0].data[:-1] + b"\0")
    with pytest.raises(PayloadKeyError, match="does not decrypt"):
        await codec.decode([tampered])
