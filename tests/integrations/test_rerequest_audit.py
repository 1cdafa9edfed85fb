"""A rerun the forge asks for (the GitHub App's check_run / check_suite "Re-run") is audited as
an API rerun is, with the system as actor: one entry per rerun however often the delivery comes,
none for a request that reruns nothing, and none twice when the start failed after the commit and
the redelivery starts what was left."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from core.integrations.app_deliveries import receive_app
from core.integrations.deliveries import Delivery, RejectedDeliveries
from db.models.operations import AuditLog
from db.models.pipelines import PipelineRun
from db.session import session_scope
from forgeline.settings import Settings
from tests.integrations.app_support import app_delivery
from tests.integrations.support import (
    Connected,
    connect_repo,
    connect_through_app,
    make_git_repo,
    runs_of,
)
from tests.runs.helpers import create_run

SHA = "c" * 40


async def failed_run(
    session_maker: Any, settings: Settings, connected: Connected, index: int
) -> str:
    """A failed run of pipeline `index` reported as a check run on acme/widgets at SHA."""
    created = await create_run(
        session_maker,
        settings,
        connected.org_id,
        connected.pipeline_ids[index],
        branch="main",
        commit_sha=SHA,
    )
    async with session_scope(session_maker) as session:
        run = await session.get(PipelineRun, created.id)
        assert run is not None
        run.status = "failed"
        run.metadata_ = {
            "check_run": {"id": index + 1},
            "forge": {"event": "push", "provider": "github", "repository": "acme/widgets"},
        }
    return str(created.id)


async def project(session_maker: Any, settings: Settings, tmp_path: Any, installation: int) -> Any:
    repo, _ = make_git_repo(tmp_path)
    connected = await connect_repo(
        session_maker, settings, repo, pipelines=[{"on_push": {}}, {"on_push": {}}]
    )
    await connect_through_app(session_maker, connected, installation)
    return connected


async def audit_of(session_maker: Any, org_id: uuid.UUID) -> list[AuditLog]:
    async with session_maker() as session:
        rows = await session.scalars(
            select(AuditLog)
            .where(AuditLog.organization_id == org_id, AuditLog.action == "pipeline_run.rerun")
            .order_by(AuditLog.created_at)
        )
        return list(rows)


def suite(installation: int) -> dict[str, Any]:
    return {
        "action": "rerequested",
        "installation": {"id": installation},
        "check_suite": {"head_sha": SHA},
        "repository": {"full_name": "acme/widgets"},
    }


async def test_each_forge_rerun_is_audited_once_with_the_system_as_actor(
    api_client, app_api, app_settings, installation, session_maker, tmp_path
) -> None:
    connected = await project(session_maker, app_settings, tmp_path, installation)
    sources = {await failed_run(session_maker, app_settings, connected, i) for i in (0, 1)}
    delivery = str(uuid.uuid4())
    body, headers = app_delivery("check_suite", suite(installation), delivery=delivery)
    # The same delivery eight times at once, then once more later: one rerun of each run.
    answers = await asyncio.gather(
        *(
            api_client.post("/v1/webhooks/github-app", content=body, headers=headers)
            for _ in range(8)
        )
    )
    assert sorted(a.json()["status"] for a in answers) == ["accepted"] + ["duplicate"] * 7
    again = await api_client.post("/v1/webhooks/github-app", content=body, headers=headers)
    assert again.json()["status"] == "duplicate"

    reruns = [r for r in await runs_of(session_maker, connected.pipeline_ids) if r.rerun_of_id]
    assert len(reruns) == 2
    entries = await audit_of(session_maker, connected.org_id)
    assert sorted(str(e.resource_id) for e in entries) == sorted(str(r.id) for r in reruns)
    for entry in entries:
        assert (entry.actor_type, entry.actor_user_id, entry.actor_api_key_id) == (
            "system",
            None,
            None,
        )
        assert entry.resource_type == "pipeline_run"
        assert entry.new_values is not None and entry.new_values["from"] == "failed"
        assert entry.metadata_ == {
            "requested_by": "github_app",
            "event": "check_suite",
            "delivery_id": delivery,
            "installation_id": installation,
        }
    assert {e.new_values["rerun_of"] for e in entries if e.new_values} == sources


@pytest.mark.parametrize(
    "change",
    [
        {"action": "completed"},  # not a re-run request
        {"check_suite": {"head_sha": "d" * 40}},  # no run of that commit
        {"repository": {"full_name": "acme/widgets-fork"}},  # not a covered repository
        {"installation": "another"},  # another installation
    ],
)
async def test_a_request_that_reruns_nothing_writes_no_audit(
    api_client, app_api, app_settings, installation, session_maker, tmp_path, change
) -> None:
    connected = await project(session_maker, app_settings, tmp_path, installation)
    await failed_run(session_maker, app_settings, connected, 0)
    if change.get("installation") == "another":
        change = {"installation": {"id": installation + 1}}
    body, headers = app_delivery("check_suite", {**suite(installation), **change})
    r = await api_client.post("/v1/webhooks/github-app", content=body, headers=headers)
    assert r.status_code in (202, 404), r.text
    assert r.status_code == 404 or r.json()["status"] == "ignored"
    assert await audit_of(session_maker, connected.org_id) == []
    assert len(await runs_of(session_maker, connected.pipeline_ids)) == 1


async def test_a_start_that_failed_after_the_commit_is_not_audited_twice(
    api_client, app_api, app_settings, installation, session_maker, tmp_path
) -> None:
    connected = await project(session_maker, app_settings, tmp_path, installation)
    await failed_run(session_maker, app_settings, connected, 0)
    delivery = str(uuid.uuid4())
    body, headers = app_delivery("check_suite", suite(installation), delivery=delivery)

    async def unreachable() -> Any:
        raise ConnectionError("Temporal is unreachable")

    # The reruns and their audit entries are committed, then Temporal cannot be reached.
    async with session_maker() as session:
        with pytest.raises(ConnectionError):
            await receive_app(
                session,
                unreachable,
                app_settings,
                Delivery(
                    provider="github", headers={k.lower(): v for k, v in headers.items()}, body=body
                ),
                RejectedDeliveries(),
            )
    [entry] = await audit_of(session_maker, connected.org_id)
    # The forge's redelivery starts the rerun left unstarted and audits nothing more.
    r = await api_client.post("/v1/webhooks/github-app", content=body, headers=headers)
    assert r.status_code == 202 and r.json()["status"] == "duplicate", r.text
    assert [e.id for e in await audit_of(session_maker, connected.org_id)] == [entry.id]
    [rerun] = [r for r in await runs_of(session_maker, connected.pipeline_ids) if r.rerun_of_id]
    assert str(entry.resource_id) == str(rerun.id)
