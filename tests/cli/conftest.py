"""CLI tests drive the real product: a uvicorn API on loopback (real Postgres, real Temporal)
and, where runs execute, a sandboxed pipeline worker on the queue the API starts runs on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from typer.testing import CliRunner

import forgeline.cli as cli
from forgeline.settings import PIPELINES_TASK_QUEUE, Settings
from tests.api_server import ApiServer
from tests.runs.helpers import pipeline_worker
from tests.runs.sandbox import sandbox_runner

runner = CliRunner()


@pytest.fixture(scope="module")
def api_url(settings: Settings) -> Iterator[str]:
    server = ApiServer(settings).start()
    yield server.url
    server.stop()


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test has its own (empty) config directory: no profile leaks between tests."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("FORGELINE_PROFILE", raising=False)
    return home


@pytest.fixture
async def worker(
    temporal_client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> AsyncIterator[None]:
    runner_ = sandbox_runner(tmp_path / "state")
    async with pipeline_worker(
        temporal_client, PIPELINES_TASK_QUEUE, settings, session_maker, runner_
    ):
        yield


async def invoke(
    *args: str, key: str | None = None, stdin: str | None = None
) -> tuple[int, str, str]:
    """The CLI in this process (exit code, stdout, stderr)."""
    env = {"FORGELINE_API_KEY": key} if key else {}
    result = await asyncio.to_thread(runner.invoke, cli.app, list(args), env=env, input=stdin)
    return result.exit_code, result.stdout, result.stderr


def spawn(*args: str, key: str) -> subprocess.Popen[str]:
    """The CLI as a script would run it from a terminal: its own process, with Ctrl-C's SIGINT
    at its default (a suite started in the background of a non-interactive shell has it
    ignored, and children inherit that)."""
    env = {**os.environ, "FORGELINE_API_KEY": key}
    return subprocess.Popen(
        [sys.executable, "-c", "from forgeline.cli import app; app()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
