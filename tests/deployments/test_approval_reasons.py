"""Hostile approval reasons are refused without wedging the deployment: a NUL sent straight to
the workflow, control characters through the API."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from db.models.accounts import User
from db.models.deployments import Deployment, DeploymentApproval
from db.session import session_scope
from tests.deployments.helpers import (
    decide,
    make_activities,
    make_environment,
    protected_environment,
    request_deployment,
    running_worker,
    stop,
    wait_status,
)
from tests.factories import make_org
from workflows.deployment import DeploymentWorkflow, deployment_workflow_id
from workflows.deployment_models import DecisionRecord


async def test_a_nul_reason_never_wedges_a_deployment(
    settings, session_maker, temporal_client, task_queue
) -> None:
    """Sent straight to the workflow (past the API), a NUL reason is refused by the update's
    validator; recorded by an older workflow, it is stored readable instead of failing for ever."""
    org = await make_org(session_maker, role="admin")
    env_id = await protected_environment(session_maker, org.org_id, 1)
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        dep = await request_deployment(
            session_maker,
            temporal_client,
            org.org_id,
            env_id,
            task_queue,
            user_id=org.owner_user_id,
        )
        try:
            handle = temporal_client.get_workflow_handle_for(
                DeploymentWorkflow.run, deployment_workflow_id(str(dep))
            )
            with pytest.raises(WorkflowUpdateFailedError):
                await decide(handle, str(org.user_id), "admin", approved=False, reason="no\x00")
            outcome = await decide(handle, str(org.user_id), "admin", approved=False, reason="no")
            assert outcome.status == "rejected"
            await wait_status(session_maker, dep, ("rejected",))
        finally:
            await stop(temporal_client, dep)
    # The projection itself survives a NUL (a decision taken before the API refused them).
    from workflows.deployment_models import ApprovalDecision

    other = uuid.uuid4()
    async with session_scope(session_maker) as session:
        session.add(
            User(id=other, email=f"o-{other.hex[:8]}@example.com", name="o")  # a second person
        )
    await ActivityEnvironment().run(
        activities.record_decision,
        DecisionRecord(
            deployment_id=str(dep),
            decision=ApprovalDecision(
                approver_user_id=str(other), approver_role="admin", approved=False, reason="a\x00b"
            ),
        ),
    )
    async with session_maker() as session:
        reason = await session.scalar(
            select(DeploymentApproval.reason).where(
                DeploymentApproval.deployment_id == dep, DeploymentApproval.user_id == other
            )
        )
    assert reason == "a\ufffdb"
    # A decision the database can never take (no such person) fails at once, not 60 times.
    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(
            activities.record_decision,
            DecisionRecord(
                deployment_id=str(dep),
                decision=ApprovalDecision(
                    approver_user_id=str(uuid.uuid4()),
                    approver_role="admin",
                    approved=True,
                    reason="ghost",
                ),
            ),
        )
    assert failed.value.non_retryable and failed.value.type == "ValidationFailed"


async def test_control_characters_in_free_text_are_refused(api_client, session_maker) -> None:
    org = await make_org(session_maker)
    _, env_id = await make_environment(session_maker, org.org_id, provider="static")
    url = f"/v1/environments/{env_id}/deployments"
    for body in (
        {"version": "v1\x00"},
        {"version": "v1\x1b[2J"},
        {"version": "v1", "branch": "main\x00"},
        {"version": "v1", "branch": "main\n"},
        {"version": "v1", "source_dir": "/tmp/x\x00"},
        {"version": "v1", "output_dir": "dist\x7f"},
        {"version": "v1", "dockerfile": "Dockerfile\r"},
    ):
        r = await api_client.post(url, json=body, headers=org.headers)
        assert r.status_code == 422, (body, r.text)
        assert "control characters" in r.text, r.text
    patches: list[dict[str, Any]] = [{"name": "prod\x00"}, {"config": {"region": "eu\x00"}}]
    for patch in patches:
        r = await api_client.patch(f"/v1/environments/{env_id}", json=patch, headers=org.headers)
        assert r.status_code == 422, (patch, r.text)
    async with session_maker() as session:
        written = await session.scalar(
            select(Deployment.id).where(Deployment.environment_id == env_id).limit(1)
        )
    assert written is None
