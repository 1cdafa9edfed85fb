"""An archived pipeline's Temporal Schedules go with it and stay gone: the worker's start-up
reconciliation does not bring them back."""

from __future__ import annotations

import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core.integrations import schedules
from tests.agent.support import make_project
from tests.factories import make_org
from tests.pipelines.support import CANONICAL, create
from workflows.integrations_models import pipeline_schedule_id

pytestmark = pytest.mark.timeout(120)
SCHEDULED = CANONICAL.replace(
    "    - main\nvariables:", "    - main\n  schedule:\n  - cron: 0 3 * * *\nvariables:"
)


async def _exists(client: Client, schedule_id: str) -> bool:
    try:
        await client.get_schedule_handle(schedule_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_archived_pipelines_schedules_stay_deleted(
    api_client, session_maker, temporal_client
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    pipeline_id = await create(api_client, org, project_id, SCHEDULED)
    schedule_id = pipeline_schedule_id(str(pipeline_id), 0)
    assert await _exists(temporal_client, schedule_id)

    deleted = await api_client.delete(f"/v1/pipelines/{pipeline_id}", headers=org.headers)
    assert deleted.status_code == 204
    assert not await _exists(temporal_client, schedule_id)
    await schedules.ensure_pipeline_schedules(temporal_client, session_maker)
    assert not await _exists(temporal_client, schedule_id)
