"""The agent's activities are thin adapters: registered under their contracts' names, and core
failures reach Temporal as typed errors (non-retryable where no attempt can help)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.agent.activities import AgentActivities
from db.models.agent import AgentTask
from db.session import session_scope
from forgeline.settings import Settings
from forgeline.statuses.agent import AgentTaskStatus
from infra.storage import LocalObjectStore
from tests.agent.support import make_project
from tests.factories import make_org
from workflows.agent_models import CheckoutInput, StartExecutionInput
from workflows.contract import ActivityContract
from workflows.contracts import agent as contracts

CONTRACTS: list[ActivityContract[Any, Any]] = [
    contracts.START_EXECUTION,
    contracts.CHECKOUT_REPOSITORY,
    contracts.PLANNER_TURN,
    contracts.LLM_TURN,
    contracts.RUN_TOOL,
    contracts.FINISH_TASK,
    contracts.PREPARE_VERIFICATION,
    contracts.EXAMINE_VERIFICATION_RUN,
]


def _activities(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> AgentActivities:
    return AgentActivities(settings, session_maker, LocalObjectStore(tmp_path / "objects"), None)


def test_registered_names_are_the_contracts_names(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    agent = _activities(settings, session_maker, tmp_path)
    names: list[str] = []
    for fn in agent.activities:
        defn = activity._Definition.from_callable(fn)
        assert defn is not None and defn.name is not None
        names.append(defn.name)
    assert names == [c.name for c in CONTRACTS]
    # The names recorded in histories before the contracts existed.
    assert all(name.startswith("agent.") for name in names)


async def test_unknown_task_is_a_non_retryable_task_not_found(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    agent = _activities(settings, session_maker, tmp_path)
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(
            agent.start_execution, StartExecutionInput(task_id=uuid.uuid4())
        )
    assert err.value.type == "TaskNotFound" and err.value.non_retryable


async def test_project_without_repository_is_refused_for_good(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    agent = _activities(settings, session_maker, tmp_path)
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(
            agent.checkout_repository, CheckoutInput(task_id=uuid.uuid4(), project_id=project_id)
        )
    assert err.value.type == "RepositoryMissing" and err.value.non_retryable
    assert err.value.type in contracts.CHECKOUT_REPOSITORY.non_retryable


async def test_hostile_repository_url_is_refused_before_any_clone(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    org = await make_org(session_maker)
    project_id = await make_project(
        session_maker, org.org_id, "ext::sh -c 'touch /tmp/pwned'", provider="github"
    )
    agent = _activities(settings, session_maker, tmp_path)
    task_id = uuid.uuid4()
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(
            agent.checkout_repository, CheckoutInput(task_id=task_id, project_id=project_id)
        )
    assert err.value.type == "UnsafeRepositoryUrl" and err.value.non_retryable
    assert not agent.workspaces.path(task_id).exists()


async def test_concurrent_duplicate_start_records_one_execution(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    task_id = uuid.uuid4()
    async with session_scope(session_maker) as session:
        session.add(
            AgentTask(
                id=task_id,
                organization_id=org.org_id,
                project_id=project_id,
                task_type="analyze_repo",
                status=AgentTaskStatus.PENDING,
                input_data={},
            )
        )
    agent = _activities(settings, session_maker, tmp_path)
    env = ActivityEnvironment()
    first, second = await asyncio.gather(
        env.run(agent.start_execution, StartExecutionInput(task_id=task_id)),
        env.run(agent.start_execution, StartExecutionInput(task_id=task_id)),
    )
    assert first.execution_id == second.execution_id
    async with session_maker() as session:
        task = await session.get(AgentTask, task_id)
        assert task is not None and task.status == AgentTaskStatus.RUNNING


def _git(*args: str, cwd: Path) -> None:
    import subprocess

    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _repo_on(tmp_path: Path, branch: str) -> Path:
    repo = tmp_path / f"repo-{branch}"
    repo.mkdir()
    _git("init", "-q", "-b", branch, cwd=repo)
    (repo / "index.html").write_text("<!doctype html><title>x</title>")
    _git("add", ".", cwd=repo)
    _git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "x", cwd=repo)
    return repo


async def test_a_repository_whose_default_is_not_the_stored_guess_is_cloned_at_its_head(
    settings: Settings, session_maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """The stored default branch starts as "main"; a repository on `master` still checks out,
    at its own HEAD. A branch the task names is never swapped for another."""
    repo = _repo_on(tmp_path, "master")
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repo))
    local = settings.model_copy(update={"allow_local_repositories": True})
    agent = _activities(local, session_maker, tmp_path)
    task_id = uuid.uuid4()
    checkout = await ActivityEnvironment().run(
        agent.checkout_repository, CheckoutInput(task_id=task_id, project_id=project_id)
    )
    assert (Path(checkout.workspace) / "index.html").exists() and len(checkout.commit_sha) == 40

    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(
            agent.checkout_repository,
            CheckoutInput(task_id=uuid.uuid4(), project_id=project_id, branch="release"),
        )
    assert err.value.type == "RepositoryUnavailable"
