"""Smoke test of the real processes: uvicorn (API) and worker.py against the session's services."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.service import RPCError

from forgeline.embedded.postgres import free_port
from forgeline.settings import TASK_QUEUES, Settings
from forgeline.temporal_client import connect_temporal
from workflows.echo import DIAGNOSTICS_TASK_QUEUE, EchoInput, EchoOutput, EchoWorkflow

ROOT = Path(__file__).resolve().parents[2]


def _child_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "FORGELINE_ENVIRONMENT": "test",
        "FORGELINE_DATABASE_URL": settings.database_url or "",
        "FORGELINE_TEMPORAL_ADDRESS": settings.temporal_address or "",
        "FORGELINE_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
        "FORGELINE_DATA_DIR": str(settings.data_dir),
        "FORGELINE_LOG_LEVEL": "INFO",
        "FORGELINE_WORKER_SHUTDOWN_GRACE_SECONDS": "5",
    }


class Child:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return int(self.process.returncode)


@pytest.fixture(scope="module")
async def quiet_production_queues(settings: Settings) -> None:
    """worker.py polls the production task queues. On the session's shared Temporal server, API
    tests earlier in the run started workflows there that no worker of theirs ever ran; this
    module is about the processes, not about finishing their leftovers, so end them first."""
    client = await connect_temporal(settings)
    async for execution in client.list_workflows('ExecutionStatus="Running"'):
        if execution.task_queue in TASK_QUEUES:
            with contextlib.suppress(RPCError):
                await client.get_workflow_handle(execution.id).terminate("e2e: leftover")


@pytest.fixture(scope="module")
def worker_process(settings: Settings, quiet_production_queues: None) -> Iterator[Child]:
    child = Child("worker", [sys.executable, "worker.py"], _child_env(settings), settings.data_dir)
    yield child
    status = child.stop()
    assert status == 0, f"worker did not shut down cleanly ({status}):\n{child.output()}"


@pytest.fixture(scope="module")
async def api_url(settings: Settings) -> AsyncIterator[str]:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory"]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    child = Child("api", args, _child_env(settings), settings.data_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            for _ in range(300):
                if child.process.poll() is not None:
                    pytest.fail(f"API exited with {child.process.returncode}:\n{child.output()}")
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"API never became healthy:\n{child.output()}")
        yield url
    finally:
        child.stop()


async def test_healthz_reports_database_and_temporal(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["database"]["ok"] is True
    assert body["temporal"]["ok"] is True


async def test_openapi_document_is_served(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.get("/openapi.json")
        docs = await client.get("/docs")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert "/healthz" in document["paths"] or document["paths"]
    assert docs.status_code == 200


async def test_worker_round_trips_a_pydantic_payload(
    settings: Settings, worker_process: Child
) -> None:
    client = await connect_temporal(settings)
    handle = await client.start_workflow(
        EchoWorkflow.run,
        EchoInput(message="ping", repeat=2, tags=["smoke"]),
        id=f"diagnostics-echo-{uuid.uuid4()}",
        task_queue=DIAGNOSTICS_TASK_QUEUE,
        execution_timeout=timedelta(seconds=120),
    )
    pending = asyncio.ensure_future(handle.result())
    # A worker that dies at start-up (a broken registration) must fail the test, not hang it.
    while not pending.done():
        if worker_process.process.poll() is not None:
            pending.cancel()
            pytest.fail(
                f"worker.py exited with {worker_process.process.returncode}:\n"
                f"{worker_process.output()}"
            )
        await asyncio.wait([pending], timeout=0.2)
    result = pending.result()
    assert isinstance(result, EchoOutput), worker_process.output()
    assert result == EchoOutput(
        message="ping ping", echoed_by=DIAGNOSTICS_TASK_QUEUE, tags=["smoke"]
    )
