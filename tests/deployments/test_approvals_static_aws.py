"""Approval gate (granted, rejected, timed out, validator) on the time-skipping server, and the
`static` and `aws` (moto S3) providers end to end."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import select
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from core.deployments import repository, service
from db.models.deployments import InfrastructureResource
from forgeline.embedded.postgres import free_port
from forgeline.settings import SEARCH_ATTRIBUTES
from tests.deployments.helpers import (
    decide,
    deployment_row,
    make_activities,
    make_environment,
    org_sources,
    running_worker,
    start_deployment,
    static_site,
    wait_status,
)
from tests.factories import make_org
from workflows.deployment import DeploymentWorkflow, deployment_workflow_id
from workflows.deployment_models import DeploymentSource


@pytest.fixture(scope="module")
async def skipping(time_skipping_env):
    """The time-skipping server with Forgeline's search attributes registered (the deployment
    workflow sets them; the test server starts without them)."""
    for name in SEARCH_ATTRIBUTES:
        try:
            await time_skipping_env.client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace="default",
                    search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD},
                )
            )
        except RPCError as exc:
            if "already" not in str(exc).lower():
                raise
    return time_skipping_env


async def _protected(session_maker, org, tmp_path, client, task_queue, timeout_s: float = 3600):
    _, env_id = await make_environment(
        session_maker,
        org.org_id,
        provider="static",
        env_type="production",
        protected=True,
        config={"approval_timeout_seconds": timeout_s},
    )
    dep = await start_deployment(
        session_maker,
        client,
        org.org_id,
        env_id,
        static_site(tmp_path),
        task_queue=task_queue,
        user_id=org.owner_user_id,
    )
    await wait_status(session_maker, dep, ("awaiting_approval",))
    return dep, client.get_workflow_handle_for(
        DeploymentWorkflow.run, deployment_workflow_id(str(dep))
    )


async def test_approval_times_out_and_rejects(
    settings, session_maker, skipping, task_queue, tmp_path
):
    client = skipping.client
    org = await make_org(session_maker, role="admin")
    sources = org_sources(settings, org.org_id)
    activities = make_activities(settings, session_maker, client, None)
    async with running_worker(client, task_queue, activities):
        dep, handle = await _protected(
            session_maker, org, sources, client, task_queue, timeout_s=2 * 3600
        )
        # Two hours of waiting pass in (skipped) time.
        await skipping.sleep(2 * 3600 + 60)
        await wait_status(session_maker, dep, ("rejected",))
        result = await handle.result()
        assert result.status == "rejected" and "timed out" in (result.reason or "")
        assert (await deployment_row(session_maker, dep)).status == "rejected"


async def test_approval_granted_then_static_site_is_active(
    settings, session_maker, skipping, task_queue, tmp_path: Path
):
    client = skipping.client
    org = await make_org(session_maker, role="admin")
    sources = org_sources(settings, org.org_id)
    activities = make_activities(settings, session_maker, client, None)
    async with running_worker(client, task_queue, activities):
        dep, handle = await _protected(session_maker, org, sources, client, task_queue)
        # The triggering member cannot approve their own deployment; a viewer cannot either.
        with pytest.raises(WorkflowUpdateFailedError):
            await decide(handle, str(org.owner_user_id), "owner", approved=True, reason="self")
        with pytest.raises(WorkflowUpdateFailedError):
            await decide(handle, str(uuid.uuid4()), "viewer", approved=True, reason="viewer")
        outcome = await decide(handle, str(org.user_id), "admin", approved=True, reason="ship it")
        assert outcome.approved
        result = await handle.result()
        assert result.status == "active", result.reason
        row = await deployment_row(session_maker, dep)
        assert row.status == "active" and row.approval_reason == "ship it"
        # Served on a host of its own under the apps domain, not on the API's origin.
        assert row.url and row.url.split("//")[1].split(":")[0].endswith(f".{settings.apps_domain}")
        assert activities._store.exists(f"{row.artifact_key}/index.html")
        # The time-skipping server freezes time while any workflow task waits for a worker:
        # end what outlives this test (the environment lock, the monitor) while ours still runs.
        for workflow_id in (f"environment-lock-{row.environment_id}", f"deployment-monitor-{dep}"):
            await client.get_workflow_handle(workflow_id).terminate("test over")


async def test_approval_rejected(settings, session_maker, skipping, task_queue, tmp_path):
    client = skipping.client
    org = await make_org(session_maker, role="admin")
    sources = org_sources(settings, org.org_id)
    activities = make_activities(settings, session_maker, client, None)
    async with running_worker(client, task_queue, activities):
        dep, handle = await _protected(session_maker, org, sources, client, task_queue)
        await decide(handle, str(org.user_id), "admin", approved=False, reason="not on a Friday")
        result = await handle.result()
        assert result.status == "rejected"
        row = await deployment_row(session_maker, dep)
        assert row.status == "rejected" and row.rejection_reason == "not on a Friday"


@pytest.fixture(scope="module")
def moto_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


async def test_aws_s3_website_deploy_records_resource_and_cost(
    settings, session_maker, temporal_client, task_queue, tmp_path, moto_endpoint
):
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    org = await make_org(session_maker)
    sources = org_sources(settings, org.org_id)
    _, env_id = await make_environment(
        session_maker, org.org_id, provider="aws", config={"health_check_path": "/"}
    )
    activities = make_activities(settings, session_maker, temporal_client, None, lambda: s3)
    async with running_worker(temporal_client, task_queue, activities):
        dep = await start_deployment(
            session_maker,
            temporal_client,
            org.org_id,
            env_id,
            static_site(sources),
            task_queue=task_queue,
        )
        row = await wait_status(session_maker, dep, ("active", "failed", "rolled_back"))
        assert row.status == "active", row.error
    bucket = f"forgeline-site-{env_id}"
    assert b"v1" in s3.get_object(Bucket=bucket, Key="index.html")["Body"].read()
    async with session_maker() as session:
        res = await session.scalar(
            select(InfrastructureResource).where(InfrastructureResource.environment_id == env_id)
        )
    assert res is not None and res.resource_type == "s3_bucket" and res.status == "active"
    assert res.resource_id == f"arn:aws:s3:::{bucket}" and res.monthly_cost is not None
    assert res.monthly_cost > 0


async def test_unknown_or_unavailable_provider_is_refused_before_any_row(session_maker):
    org = await make_org(session_maker)
    _, env_id = await make_environment(session_maker, org.org_id, provider="vercel")
    from db.session import session_scope
    from forgeline.errors import ProviderUnavailable

    with pytest.raises(ProviderUnavailable, match="provider not available"):
        async with session_scope(session_maker) as session:
            env, project = await repository.environment_for(session, org.org_id, env_id)
            await service.create_deployment(
                session, env, project, DeploymentSource(version="v1"), triggered_by_user_id=None
            )
    await asyncio.sleep(0)
