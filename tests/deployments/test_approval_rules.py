"""Approvals that hold, on the real API, Postgres and Temporal: the person behind an API key
cannot approve their own deployment, `required_approvals` counts distinct approvers (a repeated
approval counts once, concurrent ones of different people all count), protection changes need
the approving role and never move a deployment already waiting, and hostile reasons are refused
without wedging the deployment."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.deployments.pipeline_stage import PipelineDeployActivities
from core.accounts.scopes import ALL_SCOPES
from core.deployments import approvals, repository, service
from db.models.accounts import OrganizationMember, User
from db.models.deployments import Deployment, DeploymentApproval
from db.models.pipelines import Pipeline, PipelineRun
from db.models.projects import Environment
from db.session import session_scope
from infra.storage import LocalObjectStore
from tests.deployments.helpers import (
    decide,
    make_activities,
    make_environment,
    running_worker,
    wait_status,
)
from tests.factories import make_org
from workflows.deployment import DeploymentWorkflow, deployment_workflow_id
from workflows.deployment_models import DecisionRecord, DeploymentInput, DeploymentSource
from workflows.runs_models import DeployStageInput

# Already published files: the deployment needs no build (nothing here is about building).
PUBLISHED = DeploymentSource(version="v1", static_prefix="deployments/none/site")


async def add_member(
    session_maker: Any, org_id: uuid.UUID, role: str
) -> tuple[uuid.UUID, dict[str, str]]:
    """Another person in the organization, with an API key of their own."""
    from core.accounts.keys import insert_api_key

    async with session_scope(session_maker) as session:
        user = User(id=uuid.uuid4(), email=f"{role}-{uuid.uuid4().hex[:8]}@example.com", name=role)
        session.add(user)
        await session.flush()
        session.add(OrganizationMember(organization_id=org_id, user_id=user.id, role=role))
        _key, raw = await insert_api_key(
            session,
            organization_id=org_id,
            created_by_user_id=user.id,
            name=f"{role} key",
            scopes=sorted(ALL_SCOPES),
        )
    return user.id, {"Authorization": f"Bearer {raw}"}


async def another_key(session_maker: Any, org_id: uuid.UUID, user_id: uuid.UUID) -> dict[str, str]:
    from core.accounts.keys import insert_api_key

    async with session_scope(session_maker) as session:
        _key, raw = await insert_api_key(
            session,
            organization_id=org_id,
            created_by_user_id=user_id,
            name="another",
            scopes=sorted(ALL_SCOPES),
        )
    return {"Authorization": f"Bearer {raw}"}


async def protect(session_maker: Any, env_id: uuid.UUID, required: int) -> None:
    async with session_scope(session_maker) as session:
        await session.execute(
            update(Environment)
            .where(Environment.id == env_id)
            .values(is_protected=True, required_approvals=required)
        )


async def request_deployment(
    session_maker: Any,
    client: Any,
    org_id: uuid.UUID,
    env_id: uuid.UUID,
    task_queue: str,
    *,
    user_id: uuid.UUID | None = None,
    api_key_id: uuid.UUID | None = None,
) -> uuid.UUID:
    async with session_scope(session_maker) as session:
        env, project = await repository.environment_for(session, org_id, env_id)
        deployment, inp = await service.create_deployment(
            session,
            env,
            project,
            PUBLISHED,
            triggered_by_user_id=user_id,
            triggered_by_api_key_id=api_key_id,
        )
    await service.start_workflow(client, inp, task_queue=task_queue)
    await wait_status(session_maker, deployment.id, ("awaiting_approval",))
    return deployment.id


async def stop(client: Any, deployment_id: uuid.UUID) -> None:
    handle = client.get_workflow_handle(deployment_workflow_id(str(deployment_id)))
    with contextlib.suppress(Exception):
        await handle.terminate("test over")


async def test_a_key_holder_cannot_approve_what_their_key_requested(
    api_client, settings, session_maker, temporal_client, task_queue, tmp_path: Path
) -> None:
    org = await make_org(session_maker, role="admin")
    _, env_id = await make_environment(session_maker, org.org_id, provider="static")
    await protect(session_maker, env_id, 1)
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        # Requested with the admin's API key only: no user on the request.
        dep = await request_deployment(
            session_maker,
            temporal_client,
            org.org_id,
            env_id,
            task_queue,
            api_key_id=org.api_key_id,
        )
        try:
            async with session_maker() as session:
                row = await session.get(Deployment, dep)
                assert row is not None and row.triggered_by_user_id == org.user_id
            url = f"/v1/deployments/{dep}/approve"
            # The same person, through another credential (their second key): refused.
            mine = await another_key(session_maker, org.org_id, org.user_id)
            r = await api_client.post(url, json={"reason": "mine"}, headers=mine)
            assert r.status_code == 403, r.text
            r = await api_client.post(url, json={"reason": "mine"}, headers=org.headers)
            assert r.status_code == 403, r.text
            # Straight to the workflow, the rule holds too.
            handle = temporal_client.get_workflow_handle_for(
                DeploymentWorkflow.run, deployment_workflow_id(str(dep))
            )
            with pytest.raises(WorkflowUpdateFailedError):
                await decide(handle, str(org.user_id), "admin", approved=True, reason="self")
            owner = await another_key(session_maker, org.org_id, org.owner_user_id)
            r = await api_client.post(url, json={"reason": "ok"}, headers=owner)
            assert r.status_code == 200, r.text
            assert r.json()["approved_by"] == [str(org.owner_user_id)]
            await wait_status(
                session_maker,
                dep,
                ("queued", "deploying", "verifying", "active", "failed", "rolled_back"),
            )
        finally:
            await stop(temporal_client, dep)


async def test_a_pipeline_run_triggered_with_a_key_is_its_owners(
    settings, session_maker, tmp_path: Path
) -> None:
    """The deploy stage's deployment names the key's owner as the person behind it."""
    org = await make_org(session_maker, role="admin")
    project_id, env_id = await make_environment(session_maker, org.org_id, provider="static")
    await protect(session_maker, env_id, 1)
    async with session_scope(session_maker) as session:
        pipeline = Pipeline(
            id=uuid.uuid4(), project_id=project_id, organization_id=org.org_id, name="p"
        )
        session.add(pipeline)
        await session.flush()
        run = PipelineRun(
            id=uuid.uuid4(),
            pipeline_id=pipeline.id,
            organization_id=org.org_id,
            project_id=project_id,
            run_number=1,
            status="running",
            triggered_by_api_key_id=org.api_key_id,
        )
        session.add(run)
    (settings.workspaces_dir / str(run.id)).mkdir(parents=True)
    (settings.workspaces_dir / str(run.id) / "index.html").write_text("hi")
    prepare = PipelineDeployActivities(
        settings=settings,
        session_maker=session_maker,
        store=LocalObjectStore(settings.objects_dir),
    )
    stage = DeployStageInput(
        run_id=str(run.id),
        organization_id=str(org.org_id),
        project_id=str(project_id),
        environment_id=str(env_id),
    )
    env = ActivityEnvironment()
    # Two attempts at once (a retried stage): one row, both answers name the key's owner.
    both: list[Any] = list(
        await asyncio.gather(
            env.run(prepare.prepare_pipeline_deployment, stage),
            env.run(prepare.prepare_pipeline_deployment, stage),
            return_exceptions=True,
        )
    )
    results = [r for r in both if isinstance(r, DeploymentInput)]
    assert results, both
    for result in results:
        assert result.triggered_by_user_id == str(org.user_id)
        assert result.protected is True and result.required_approvals == 1
    # The environment loses its protection afterwards: a retried stage keeps the rules.
    async with session_scope(session_maker) as session:
        await session.execute(
            update(Environment)
            .where(Environment.id == env_id)
            .values(is_protected=False, required_approvals=0)
        )
    retried = await env.run(prepare.prepare_pipeline_deployment, stage)
    assert retried.protected is True and retried.triggered_by_user_id == str(org.user_id)


async def test_required_approvals_count_distinct_people_and_the_rules_stay(
    api_client, settings, session_maker, temporal_client, task_queue, tmp_path: Path
) -> None:
    org = await make_org(session_maker, role="member")  # the key is a member's
    _, env_id = await make_environment(session_maker, org.org_id, provider="static")
    await protect(session_maker, env_id, 3)
    admins = [await add_member(session_maker, org.org_id, "admin") for _ in range(3)]
    viewer_id, viewer = await add_member(session_maker, org.org_id, "viewer")
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        dep = await request_deployment(
            session_maker, temporal_client, org.org_id, env_id, task_queue, user_id=org.user_id
        )
    try:
        url = f"/v1/deployments/{dep}/approve"
        # Hostile reasons: a clear 422, nothing recorded, the deployment still waits.
        for reason in ("ok\x00", "bell\x07", "\x1b[31mred", "   "):
            r = await api_client.post(url, json={"reason": reason}, headers=admins[0][1])
            assert r.status_code == 422, (reason, r.text)
        # The member who requested it and a viewer cannot approve.
        r = await api_client.post(url, json={"reason": "x"}, headers=org.headers)
        assert r.status_code == 403, r.text
        r = await api_client.post(url, json={"reason": "x"}, headers=viewer)
        assert r.status_code == 403, r.text

        # A member switching protection off (or lowering the count) is refused.
        for patch in ({"is_protected": False}, {"required_approvals": 1}):
            r = await api_client.patch(
                f"/v1/environments/{env_id}", json=patch, headers=org.headers
            )
            assert r.status_code == 403, r.text

        async with running_worker(temporal_client, task_queue, activities):
            # The same admin twice at once: counted once.
            same = await asyncio.gather(
                *(
                    api_client.post(url, json={"reason": "lgtm"}, headers=admins[0][1])
                    for _ in range(2)
                )
            )
            assert [r.status_code for r in same] == [200, 200], [r.text for r in same]
            detail = (await api_client.get(f"/v1/deployments/{dep}", headers=org.headers)).json()
            assert detail["status"] == "awaiting_approval"
            approvals = detail["approvals"]
            assert approvals["required"] == 3 and approvals["approved"] == 1
            assert approvals["missing"] == 2
            assert [d["user_id"] for d in approvals["decisions"]] == [str(admins[0][0])]
            assert set(approvals["eligible_user_ids"]) == {
                str(admins[1][0]),
                str(admins[2][0]),
                str(org.owner_user_id),
            }
            assert str(viewer_id) not in approvals["eligible_user_ids"]
            assert str(org.user_id) not in approvals["eligible_user_ids"]

        # The worker goes away mid-approval; an admin lowers the bar meanwhile.
        r = await api_client.patch(
            f"/v1/environments/{env_id}", json={"required_approvals": 1}, headers=admins[1][1]
        )
        assert r.status_code == 200, r.text

        async with running_worker(temporal_client, task_queue, activities):
            # The deployment keeps the rules it was requested under: one more is not enough...
            r = await api_client.post(url, json={"reason": "two"}, headers=admins[1][1])
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "awaiting_approval"
            assert r.json()["required_approvals"] == 3
            row = await wait_status(session_maker, dep, ("awaiting_approval",))
            assert row.required_approvals == 3
            # ... and two people approving at once both count: 4 of 3, both recorded.
            both = await asyncio.gather(
                api_client.post(url, json={"reason": "three"}, headers=admins[2][1]),
                api_client.post(
                    url,
                    json={"reason": "four"},
                    headers=await another_key(session_maker, org.org_id, org.owner_user_id),
                ),
            )
            assert [r.status_code for r in both] == [200, 200], [r.text for r in both]
            await wait_status(
                session_maker,
                dep,
                ("queued", "deploying", "verifying", "active", "failed", "rolled_back"),
            )
        async with session_maker() as session:
            people = (
                await session.scalars(
                    select(DeploymentApproval.user_id).where(
                        DeploymentApproval.deployment_id == dep
                    )
                )
            ).all()
        assert sorted(map(str, people)) == sorted(
            [*(str(a[0]) for a in admins), str(org.owner_user_id)]
        )
        # Too late to decide now.
        r = await api_client.post(url, json={"reason": "late"}, headers=admins[0][1])
        assert r.status_code == 409, r.text
    finally:
        await stop(temporal_client, dep)


async def test_a_nul_reason_never_wedges_a_deployment(
    settings, session_maker, temporal_client, task_queue
) -> None:
    """Sent straight to the workflow (past the API), a NUL reason is refused by the update's
    validator; recorded by an older workflow, it is stored readable instead of failing for ever."""
    org = await make_org(session_maker, role="admin")
    _, env_id = await make_environment(session_maker, org.org_id, provider="static")
    await protect(session_maker, env_id, 1)
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


async def test_a_decision_waits_bounded_and_a_retry_counts_once(
    api_client, settings, session_maker, temporal_client, task_queue, monkeypatch
) -> None:
    """No worker to record it: the request answers 503 with Retry-After instead of hanging; the
    same request sent again once a worker is back is the same decision (counted once)."""
    monkeypatch.setattr(approvals, "DECISION_WAIT_SECONDS", 1.0)
    org = await make_org(session_maker)
    _, env_id = await make_environment(session_maker, org.org_id, provider="static")
    await protect(session_maker, env_id, 2)
    admin_id, admin = await add_member(session_maker, org.org_id, "admin")
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        dep = await request_deployment(
            session_maker, temporal_client, org.org_id, env_id, task_queue, user_id=org.user_id
        )
    try:
        url = f"/v1/deployments/{dep}/approve"
        r = await api_client.post(url, json={"reason": "first try"}, headers=admin)
        assert r.status_code == 503, r.text
        assert r.headers.get("retry-after"), r.headers
        async with running_worker(temporal_client, task_queue, activities):
            r = await api_client.post(url, json={"reason": "first try"}, headers=admin)
            assert r.status_code == 200, r.text
            assert r.json()["approved_by"] == [str(admin_id)]
            assert r.json()["status"] == "awaiting_approval"
            detail = (await api_client.get(f"/v1/deployments/{dep}", headers=org.headers)).json()
            assert detail["approvals"]["approved"] == 1 and detail["approvals"]["missing"] == 1
    finally:
        await stop(temporal_client, dep)


async def test_promote_and_rollback_with_a_key_are_its_owners(
    api_client, session_maker, temporal_client
) -> None:
    """Every path that creates a deployment records the person behind the key, and that person
    cannot approve it with another credential."""
    org = await make_org(session_maker, role="admin")
    project_id, staging = await make_environment(session_maker, org.org_id, provider="static")
    _, production = await make_environment(
        session_maker, org.org_id, provider="static", project_id=project_id
    )
    await protect(session_maker, production, 1)
    rows = {}
    async with session_scope(session_maker) as session:
        for name, env_id, status in (
            ("staged", staging, "active"),
            ("older", production, "superseded"),
            ("newer", production, "active"),
        ):
            row = Deployment(
                id=uuid.uuid4(),
                environment_id=env_id,
                project_id=project_id,
                organization_id=org.org_id,
                version=name,
                provider="static",
                status=status,
                artifact_key=f"deployments/{uuid.uuid4()}/site",
            )
            session.add(row)
            await session.flush()
            rows[name] = row.id
    created: list[str] = []
    try:
        r = await api_client.post(
            f"/v1/deployments/{rows['staged']}/promote",
            json={"target_environment_id": str(production)},
            headers=org.headers,
        )
        assert r.status_code == 202, r.text
        created.append(r.json()["id"])
        r = await api_client.post(f"/v1/deployments/{rows['newer']}/rollback", headers=org.headers)
        assert r.status_code == 202, r.text
        created.append(r.json()["id"])
        mine = await another_key(session_maker, org.org_id, org.user_id)
        for dep in created:
            async with session_maker() as session:
                row = await session.get(Deployment, uuid.UUID(dep))
                assert row is not None
                assert row.triggered_by_user_id == org.user_id
                assert row.triggered_by_api_key_id == org.api_key_id
                assert row.approval_protected and row.required_approvals == 1
            r = await api_client.post(
                f"/v1/deployments/{dep}/approve", json={"reason": "mine"}, headers=mine
            )
            assert r.status_code == 403, r.text
    finally:
        for dep in created:
            await stop(temporal_client, uuid.UUID(dep))
