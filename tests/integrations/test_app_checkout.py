"""Checkout of a private repository connected through the GitHub App: each clone (the run's,
the changed paths of its push) mints an installation token scoped to that repository with
read access, which a loopback git forge requires; the token is in no log, row or workflow
history. A token endpoint failing (500 retried, 403 not), a removed installation: a clear
run failure. Real Postgres, Temporal, git and the sandbox runner; GitHub is a fake."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.agent.errors import AgentFailure
from core.agent.workspaces import Workspaces
from core.integrations.app_installations import record_installation_event
from db.models.pipelines import StageExecution
from db.session import session_scope
from forgeline.url_safety import UnsafeRepositoryUrl
from infra.git import operator_clone_target
from tests.integrations.app_checkout_support import (
    histories_since,
    private_app_project,
    rows_holding,
)
from tests.integrations.app_support import app_delivery
from tests.integrations.fake_forge import Failure
from tests.integrations.support import finished, push_main, run_workers
from tests.runs.helpers import log_text

ON_PUSH: list[dict[str, Any]] = [{"on_push": {}}]


async def stage_logs(session_maker: Any, run_id: Any) -> str:
    async with session_maker() as session:
        ids = (
            await session.scalars(select(StageExecution.id).where(StageExecution.run_id == run_id))
        ).all()
    return "".join([await log_text(session_maker, i) for i in ids])


async def test_private_app_repository_is_cloned_with_a_scoped_token_kept_nowhere(
    api_client,
    app_api,
    temporal_client,
    app_forge,
    app_settings,
    installation,
    session_maker,
    tmp_path,
    task_queue,
    caplog,
) -> None:
    caplog.set_level(logging.DEBUG)
    started = datetime.now(UTC)
    app, _ = app_forge
    async with private_app_project(
        app,
        installation,
        tmp_path,
        session_maker,
        app_settings,
        # A path filter: the push's changed paths are computed from git, with a token too.
        pipelines=[{"on_push": {"paths": ["src/**"]}}],
        stages=[{"name": "build", "run": "cat src/app.py; env | sort; echo built"}],
    ) as (git_forge, repo, settings, connected):
        async with run_workers(temporal_client, settings, session_maker, task_queue, tmp_path):
            await push_main(api_client, connected, repo.head, repo.before)
            run = await finished(session_maker, connected, timeout=90)
        assert run.status == "success", run.error
        assert run.commit_sha == repo.head
        logs = await stage_logs(session_maker, run.id)
        assert "private-content" in logs and "built" in logs
        # The forge refuses anonymous requests: only the minted tokens got through, each asked
        # for reading this one repository.
        assert git_forge.refused(), "git first asks without credentials"
        used = git_forge.tokens_used()
        assert len(used) == 2  # the changed paths' fetch and the run's clone, one token each
        assert used <= set(app.minted[installation])
        assert (
            app.scoped_requests
            == [{"repositories": ["widgets"], "permissions": {"contents": "read"}}] * 2
        )
    tokens = app.all_tokens()
    assert tokens
    for token in tokens:
        assert token not in logs  # not in the stage's environment either (`env` above)
        assert token not in caplog.text
    assert await rows_holding(session_maker, tokens) == []
    histories = await histories_since(temporal_client, started)
    assert f"pipeline-run-{run.id}" in histories
    for token in tokens:
        assert token not in histories


@pytest.mark.parametrize(
    ("failure", "attempts", "message"),
    [
        (Failure(500, body={"message": "Server Error"}), 3, "did not mint an installation token"),
        (
            Failure(429, {"Retry-After": "1"}, {"message": "API rate limit exceeded"}),
            3,
            "rate-limited the installation token",
        ),
        (
            Failure(403, body={"message": "Resource not accessible by integration"}),
            1,
            "refused an installation token",
        ),
    ],
)
async def test_token_endpoint_failure_fails_the_run_clearly(
    api_client,
    app_api,
    temporal_client,
    app_forge,
    app_settings,
    installation,
    session_maker,
    tmp_path,
    task_queue,
    caplog,
    failure,
    attempts,
    message,
) -> None:
    """A 500 or a rate limit (after its Retry-After) is retried per the checkout's policy (3
    attempts), a 403 is not; either way the run fails saying why, and nothing reached the git
    forge with a token."""
    app, _ = app_forge
    app.scoped_failures = [failure] * 5
    async with private_app_project(
        app,
        installation,
        tmp_path,
        session_maker,
        app_settings,
        pipelines=[{"on_push": {}}],
    ) as (git_forge, repo, settings, connected):
        async with run_workers(temporal_client, settings, session_maker, task_queue, tmp_path):
            await push_main(api_client, connected, repo.head, repo.before)
            run = await finished(session_maker, connected, timeout=90)
        assert git_forge.tokens_used() == set()
    assert run.status == "failed"
    assert message in (run.error or ""), run.error
    assert "acme/widgets" in (run.error or "")
    assert len(app.scoped_requests) == attempts
    for token in app.all_tokens():  # the check runs' own tokens
        assert token not in caplog.text


@pytest.mark.parametrize("removal", ["deleted", "suspend", "unknown to github"])
async def test_removed_installation_fails_the_run_clearly(
    api_client,
    app_api,
    temporal_client,
    app_forge,
    app_settings,
    installation,
    session_maker,
    tmp_path,
    task_queue,
    removal,
) -> None:
    """Removed or suspended on GitHub (its webhook said so): no token is asked for. Removed
    without Forgeline hearing of it: GitHub's 404 says so. Either way a clear, single failure."""
    app, _ = app_forge
    async with private_app_project(
        app,
        installation,
        tmp_path,
        session_maker,
        app_settings,
        pipelines=[{"on_push": {}}],
    ) as (git_forge, repo, settings, connected):
        if removal == "unknown to github":
            app.installations.pop(installation)
        else:
            body, headers = app_delivery(
                "installation", {"action": removal, "installation": {"id": installation}}
            )
            r = await api_client.post("/v1/webhooks/github-app", content=body, headers=headers)
            assert r.status_code == 202, r.text
        async with run_workers(temporal_client, settings, session_maker, task_queue, tmp_path):
            await push_main(api_client, connected, repo.head, repo.before)
            run = await finished(session_maker, connected, timeout=90)
        assert git_forge.tokens_used() == set()
    assert run.status == "failed"
    if removal == "unknown to github":
        assert "no longer knows the App installation" in (run.error or ""), run.error
        assert len(app.scoped_requests) == 1  # not retried: a 404 will not change
    else:
        assert "was removed or suspended on GitHub" in (run.error or ""), run.error
        assert app.scoped_requests == []


async def test_agent_checkout_of_app_repository(
    app_forge, app_settings, installation, session_maker, tmp_path
) -> None:
    """The agent's checkout mints its own token too; a suspended installation is a clear,
    non-retryable failure of the task, not a git error."""
    app, _ = app_forge
    async with private_app_project(
        app, installation, tmp_path, session_maker, app_settings, pipelines=[]
    ) as (git_forge, repo, settings, connected):
        workspaces = Workspaces(settings, session_maker)
        checkout = await workspaces.clone(uuid.uuid4(), connected.project_id, None, None, tick)
        assert checkout.commit_sha == repo.head
        assert "private-content" in (Path(checkout.workspace) / "src/app.py").read_text()
        assert len(git_forge.tokens_used()) == 1
        async with session_scope(session_maker) as session:
            await record_installation_event(
                session, "installation", {"action": "suspend", "installation": {"id": installation}}
            )
        with pytest.raises(AgentFailure) as failed:
            await workspaces.clone(uuid.uuid4(), connected.project_id, None, None, tick)
    assert failed.value.kind == "RepositoryCredentials" and not failed.value.retryable
    assert "removed or suspended" in failed.value.message
    assert len(app.scoped_requests) == 1


def tick() -> None:
    pass


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("https://ghe.internal.example/acme/widgets.git", None),
        ("http://127.0.0.1:3000/acme/widgets.git", None),
        ("http://ghe.internal.example/acme/widgets.git", "https"),
        ("https://user:pw@ghe.internal.example/acme/widgets.git", "credentials"),
        ("https://ghe.internal.example/acme/widgets.git?x=1", "credentials"),
        ("ext::sh -c touch% /tmp/x", "http(s)"),
        ("file:///srv/git/acme/widgets.git", "http(s)"),
    ],
)
def test_operator_forge_remote(url: str, refused: str | None) -> None:
    """The operator's forge may sit on a private network, but only its own transport is
    allowed, never a redirect, and a token never goes over plain http off this machine."""
    if refused is not None:
        with pytest.raises(UnsafeRepositoryUrl, match=re.escape(refused)):
            operator_clone_target(url)
        return
    target = operator_clone_target(url)
    scheme = url.split(":", 1)[0]
    assert target.env["GIT_ALLOW_PROTOCOL"] == scheme
    assert "http.followRedirects=false" in target.git_config
    assert "protocol.allow=never" in target.git_config
