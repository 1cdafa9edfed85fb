"""The integration tests' isolation itself: each test's integrations task queue is its own and
is the one the API starts deliveries on (so no later test's worker ever runs them), and the
workflows a test started that still run are terminated at its end, none started before."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from core.integrations.commit_status import start_report
from forgeline.settings import INTEGRATIONS_TASK_QUEUE, Settings
from tests.integrations.isolation import terminate_started_since
from tests.integrations.support import (
    ZERO,
    connect_repo,
    github_headers,
    github_push,
    make_git_repo,
)
from workflows.integrations_models import commit_status_workflow_id

SEEN: set[str] = set()


@pytest.mark.parametrize("attempt", [1, 2])
async def test_each_test_has_an_integrations_queue_of_its_own(
    settings: Settings, integrations_queue: str, attempt: int
) -> None:
    assert settings.integrations_task_queue == integrations_queue != INTEGRATIONS_TASK_QUEUE
    assert integrations_queue not in SEEN
    SEEN.add(integrations_queue)


async def status(client: Client, workflow_id: str) -> WorkflowExecutionStatus | None:
    return (await client.get_workflow_handle(workflow_id).describe()).status


async def test_deliveries_go_to_the_tests_queue_and_are_terminated_at_its_end(
    api_client, temporal_client: Client, settings: Settings, session_maker, tmp_path
) -> None:
    # A workflow started before the test's window: never touched by its cleanup.
    earlier = f"run-{uuid.uuid4()}"
    await start_report(temporal_client, earlier, "pending", task_queue="nobody-polls-this")
    since = datetime.now(UTC)
    repo, sha = make_git_repo(tmp_path)
    connected = await connect_repo(session_maker, settings, repo, pipelines=[{"on_push": {}}])
    body = github_push("refs/heads/main", sha, ZERO)
    r = await api_client.post(
        f"/v1/webhooks/github?repository={connected.repository_id}",
        content=body,
        headers=github_headers(connected.secret, body),
    )
    assert r.status_code == 202, r.text
    delivery = temporal_client.get_workflow_handle(r.json()["workflow_id"])
    described = await delivery.describe()
    # No worker polls the test's queue: the delivery waits there, as a leftover would.
    assert described.task_queue == settings.integrations_task_queue
    assert described.status == WorkflowExecutionStatus.RUNNING

    assert await terminate_started_since(temporal_client, since) >= 1
    assert await status(temporal_client, delivery.id) == WorkflowExecutionStatus.TERMINATED
    first = commit_status_workflow_id(earlier, "pending")
    assert await status(temporal_client, first) == WorkflowExecutionStatus.RUNNING
    # Nothing left to stop: a second cleanup terminates nothing.
    assert await terminate_started_since(temporal_client, since) == 0
    await temporal_client.get_workflow_handle(first).terminate(reason="test finished")
