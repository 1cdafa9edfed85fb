"""Verification of a generated pipeline for a Flask + pytest repository in the real sandbox: its
stages get the declared Python in virtualenvs of their own and install from a package index
served inside a network namespace this test creates (reached through the egress proxy)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from db.models.pipelines import StageExecution, StageLogChunk
from forgeline.settings import Settings
from tests.agent.support import agent_worker
from tests.agent.test_verification import generate, stored
from tests.agent.verify_repos import git_repo
from tests.runs.helpers import pipeline_worker
from tests.runs.python_index import PackageIndex, closure, package_index, repack
from tests.runs.sandbox import sandbox_runner

pytestmark = pytest.mark.timeout(300)

APP = (
    "from flask import Flask\n\n"
    "app = Flask(__name__)\n\n\n"
    '@app.get("/health")\n'
    "def health():\n"
    '    return {"status": "ok"}\n'
)
TEST = (
    "from app import app\n\n\n"
    "def test_health():\n"
    '    response = app.test_client().get("/health")\n'
    "    assert response.status_code == 200\n"
    '    assert response.get_json() == {"status": "ok"}\n'
)


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[PackageIndex]:
    wheels_dir = tmp_path / "wheels"
    wheels_dir.mkdir()
    wheels = [repack(name, wheels_dir) for name in closure(["flask", "pytest"])]
    async with package_index(tmp_path, wheels) as served:
        yield served


@pytest.fixture
async def workers(
    temporal_client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    task_queue: str,
    tmp_path: Path,
    index: PackageIndex,
) -> AsyncIterator[str]:
    runner = sandbox_runner(
        tmp_path / "runner-state", proxy_socket=index.proxy_socket, python_index_url=index.url
    )
    runs_queue = f"{task_queue}-runs"
    async with (
        agent_worker(temporal_client, settings, session_maker, task_queue),
        pipeline_worker(temporal_client, runs_queue, settings, session_maker, runner),
    ):
        yield runs_queue
    await runner.close()


async def test_a_flask_repository_verifies_green_in_the_sandbox(
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    task_queue: str,
    workers: str,
    tmp_path: Path,
    index: PackageIndex,
) -> None:
    repo = git_repo(
        tmp_path / "repo",
        {
            "requirements.txt": "flask>=3\npytest\n",
            ".python-version": "3.11\n",
            "app.py": APP,
            "tests/test_app.py": TEST,
        },
    )
    _, out = await generate(temporal_client, session_maker, task_queue, workers, repo)
    assert out.status == "completed", out
    verdict = out.output["verification"]
    assert verdict["verified"] is True, verdict
    assert verdict["attempts"] == 1 and verdict["repairs"] == []
    pipeline, runs, _ = await stored(session_maker, out.output["pipeline_id"])
    assert pipeline.verified is True and pipeline.verified_run_id == runs[-1].id
    async with session_maker() as session:
        executions = list(
            await session.scalars(
                select(StageExecution).where(StageExecution.run_id == runs[-1].id)
            )
        )
        test = next(e for e in executions if e.stage_name == "test")
        log = "".join(
            await session.scalars(
                select(StageLogChunk.content)
                .where(StageLogChunk.stage_execution_id == test.id)
                .order_by(StageLogChunk.seq)
            )
        )
    assert test.status == "success"
    assert test.warnings == []  # Python 3.11 asked, Python 3.11 given
    # Said before the stage's first command (after the cache step's own line).
    assert 0 <= log.find("forgeline: Python 3.11.") < log.find(">> pip install"), log[:500]
    assert "1 passed" in log, log[-2000:]
    assert "/simple/flask/" in index.hits.read_text()
    assert uuid.UUID(verdict["run_id"]) == runs[-1].id


async def test_a_python_the_host_lacks_is_in_the_verdicts_evidence(
    temporal_client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    task_queue: str,
    workers: str,
    tmp_path: Path,
) -> None:
    """The repository pins a Python no build host has; its test needs that version: the run
    fails on the nearest one, and the verdict's evidence says which ran instead of which."""
    repo = git_repo(
        tmp_path / "repo",
        {
            "requirements.txt": "\n",
            ".python-version": "3.99\n",
            "tests/test_version.py": (
                "import sys\nimport unittest\n\n\nclass T(unittest.TestCase):\n"
                "    def test_version(self):\n"
                "        self.assertEqual(sys.version_info[:2], (3, 99))\n"
            ),
        },
    )
    _, out = await generate(temporal_client, session_maker, task_queue, workers, repo)
    verdict = out.output["verification"]
    assert verdict["verified"] is False, verdict
    assert verdict["failed_stage"] == "test"
    assert "asks for Python 3.99" in verdict["evidence"][0], verdict
    assert "instead" in verdict["evidence"][0]
