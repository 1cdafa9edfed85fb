"""troubleshoot_failure on a real run's rows (Postgres + Temporal, the offline planner): the stage
a retry made good is not blamed; the failing stage gets its recorded class, cause and evidence."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from db.models.pipelines import StageExecution, StageLogChunk
from db.session import session_scope
from forgeline.settings import AGENT_TASK_QUEUE
from tests.agent.corpus import CORPUS, write_repo
from tests.agent.support import add_failed_run, agent_worker, make_project, task_row
from tests.factories import make_org

pytestmark = pytest.mark.timeout(120)
PYTEST_LOG = (
    ">       assert add(1, 2) == 4\nE       assert 3 == 4\n\ntests/test_math.py:4: AssertionError\n"
    "==== 1 failed, 1 passed in 0.05s ====\n"
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    by_name = {s.name: s for s in CORPUS}
    return write_repo(by_name["react-vite-yarn"], tmp_path_factory.mktemp("ts-corpus"), git=True)


async def test_troubleshoot_reads_the_recorded_classes(
    api_client, temporal_client, settings, session_maker, repo
) -> None:
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repo))
    async with session_scope(session_maker) as session:
        run_id = await add_failed_run(session, org.org_id, project_id)
        rows = [
            StageExecution(
                id=uuid.uuid4(),
                run_id=run_id,
                stage_name="install",
                attempt=1,
                status="failed",
                exit_code=1,
                failure_class="infrastructure",
                failure_cause="a network connection failed (registry or download)",
                failure_evidence=["npm ERR! code ECONNRESET"],
            ),
            StageExecution(
                id=uuid.uuid4(), run_id=run_id, stage_name="install", attempt=2, status="success"
            ),
            StageExecution(
                id=uuid.uuid4(),
                run_id=run_id,
                stage_name="test",
                attempt=1,
                status="failed",
                exit_code=1,
                failure_class="code",
                failure_cause="a test assertion failed",
                failure_evidence=["E       assert 3 == 4"],
            ),
        ]
        for row in rows:
            session.add(row)
            await session.flush()
        session.add(
            StageLogChunk(
                stage_execution_id=rows[2].id,
                seq=0,
                first_line=0,
                line_count=5,
                content=PYTEST_LOG,
            )
        )
    resp = await api_client.post(
        f"/v1/projects/{project_id}/agent-tasks",
        json={"task_type": "troubleshoot_failure", "input_data": {"pipeline_run_id": str(run_id)}},
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.text
    async with agent_worker(temporal_client, settings, session_maker, AGENT_TASK_QUEUE):
        await temporal_client.get_workflow_handle(f"agent-task-{resp.json()['id']}").result()
    out = (await task_row(session_maker, uuid.UUID(resp.json()["id"]))).output_data or {}
    assert out["failed_stages"] == ["test"]
    (found,) = out["diagnosis"]
    assert found["failure_class"] == "code"
    assert found["cause"] == "a test assertion failed"
    assert found["evidence"] == ["E       assert 3 == 4"]
    assert out["summary"] == "test: a test assertion failed (code)"
    assert out["proposed_change"] is None
