"""The forge's "Re-run" end to end: a run whose second stage fails reports a failed check run;
the App's signed `check_run` and `check_suite` rerequested deliveries each rerun it from the
failed stage (the first stage's result reused, not executed again) and a new check run reports
the rerun; 20 concurrent redeliveries start one rerun; a crash between the rerun's commit and
its start is made good by the redelivery; requests for another installation's repository, an
unknown check run or a run that needs no rerun are refused or ignored with nothing written.
Real Postgres, Temporal, git and the sandbox runner; GitHub is a fake HTTP server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, update

from core.integrations import app_deliveries, deliveries
from db.models.integrations import WebhookPayload
from db.models.pipelines import PipelineRun, StageExecution
from db.models.projects import GitProviderConnection
from db.session import session_scope
from forgeline.settings import PIPELINES_TASK_QUEUE
from tests.factories import make_org
from tests.integrations.app_support import app_delivery
from tests.integrations.fake_github_app import FakeGitHubApp
from tests.integrations.support import (
    Connected,
    commit,
    connect_repo,
    connect_through_app,
    make_git_repo,
    push_main,
    run_workers,
)
from tests.integrations.test_check_rerequested import completed_checks, finished_runs

BUILD = {"name": "build", "run": "echo built-once"}


async def delivery_rows(session_maker: Any, delivery_id: str) -> int:
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(WebhookPayload)
            .where(WebhookPayload.delivery_id == delivery_id)
        )
    return int(count or 0)


async def run_count(session_maker: Any) -> int:
    async with session_maker() as session:
        return int(await session.scalar(select(func.count()).select_from(PipelineRun)) or 0)


async def stages_of(session_maker: Any, run_id: uuid.UUID) -> dict[str, StageExecution]:
    async with session_maker() as session:
        rows = await session.scalars(select(StageExecution).where(StageExecution.run_id == run_id))
        return {s.stage_name: s for s in rows}


async def assert_rerun_from_failed(
    session_maker: Any, app: FakeGitHubApp, rerun: PipelineRun, source: PipelineRun
) -> None:
    assert rerun.metadata_["rerun_of"] == str(source.id)
    stages = await stages_of(session_maker, rerun.id)
    source_stages = await stages_of(session_maker, source.id)
    # The first stage's result is the source's (the execution it reused in turn), not a new
    # execution.
    original = source_stages["build"].reused_from_id or source_stages["build"].id
    assert stages["build"].reused_from_id == original
    assert stages["test"].reused_from_id is None
    # The rerun reports on a check run of its own, completed.
    own = [c for c in app.check_runs.values() if c.fields["external_id"] == str(rerun.id)]
    assert len(own) == 1 and app.sequence(own[0].id)[-1][0] == "completed"


async def failed_source(
    api_client: Any,
    session_maker: Any,
    app: FakeGitHubApp,
    settings: Any,
    installation: int,
    tmp_path: Any,
    test_command: str,
) -> tuple[Connected, PipelineRun, str]:
    """A pushed run whose second stage fails, with its failed check run completed."""
    repo, first = make_git_repo(tmp_path)
    head = commit(repo, {"src/app.py": "print(8)\n"})
    connected = await connect_repo(
        session_maker,
        settings,
        repo,
        pipelines=[{"on_push": {}}],
        stages=[BUILD, {"name": "test", "run": test_command}],
    )
    await connect_through_app(session_maker, connected, installation)
    await push_main(api_client, connected, head, first)
    (source,) = await finished_runs(session_maker, connected.pipeline_ids, 1)
    await completed_checks(app, 1)
    assert source.status == "failed"
    (check,) = app.check_runs.values()
    assert app.sequence(check.id)[-1] == ("completed", "failure")
    assert "| test | failed | 4 |" in check.updates[-1]["output"]["summary"]
    return connected, source, head


async def post(api_client: Any, event: str, payload: dict[str, Any], delivery: str) -> Any:
    body, headers = app_delivery(event, payload, delivery=delivery)
    return await api_client.post("/v1/webhooks/github-app", content=body, headers=headers)


async def other_installation(session_maker: Any, installation: int) -> int:
    """Another organization's installation, covering another repository."""
    org = await make_org(session_maker)
    other = installation + 7
    async with session_scope(session_maker) as session:
        session.add(
            GitProviderConnection(
                id=uuid.uuid4(),
                organization_id=org.org_id,
                provider="github",
                installation_id=other,
                installation_repositories=["rival/app"],
            )
        )
    return other


async def test_check_run_rerequest_reruns_from_failed_stage_once(
    api_client, app_api, temporal_client, app_forge, app_settings, installation, session_maker,
    tmp_path,
) -> None:  # fmt: skip
    app, _ = app_forge
    async with run_workers(
        # The API starts reruns on the pipelines queue.
        temporal_client,
        app_settings,
        session_maker,
        PIPELINES_TASK_QUEUE,
        tmp_path,
    ):
        connected, source, head = await failed_source(
            api_client, session_maker, app, app_settings, installation, tmp_path,
            "echo failing-test; exit 4",
        )  # fmt: skip
        rerequest = {
            "action": "rerequested",
            "installation": {"id": installation},
            "check_run": {"external_id": str(source.id), "head_sha": head},
            "repository": {"full_name": "acme/widgets"},
        }
        other = await other_installation(session_maker, installation)
        async with session_scope(session_maker) as session:
            await session.execute(
                update(GitProviderConnection)
                .where(GitProviderConnection.installation_id == installation)
                .values(installation_repositories=["acme/widgets", "acme/gadgets"])
            )
        before = await run_count(session_maker)
        hostile = {
            # Another installation naming this repository: it does not cover it.
            "refused": {**rerequest, "installation": {"id": other}},
            # Another installation naming its own repository and this run: not its run.
            "foreign run": {
                **rerequest,
                "installation": {"id": other},
                "repository": {"full_name": "rival/app"},
            },
            # This installation's other repository, naming this run: not that repository's.
            "another repository": {**rerequest, "repository": {"full_name": "acme/gadgets"}},
            "unknown check run": {
                **rerequest,
                "check_run": {"external_id": str(uuid.uuid4()), "head_sha": head},
            },
            "not a run": {**rerequest, "check_run": {"external_id": "ci/x", "head_sha": head}},
            "another action": {**rerequest, "action": "completed"},
        }
        for name, payload in hostile.items():
            delivery = str(uuid.uuid4())
            r = await post(api_client, "check_run", payload, delivery)
            if name == "refused":
                assert r.status_code == 404, r.text
                assert r.json()["type"].endswith("unknown-repository")
            else:
                assert r.status_code == 202 and r.json()["status"] == "ignored", (name, r.text)
            assert await delivery_rows(session_maker, delivery) == 0, name
        assert await run_count(session_maker) == before
        assert len(app.check_runs) == 1
        # The same delivery twenty times at once: one rerun.
        delivery = str(uuid.uuid4())
        answers = await asyncio.gather(
            *(post(api_client, "check_run", rerequest, delivery) for _ in range(20))
        )
        assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
        statuses = sorted(a.json()["status"] for a in answers)
        assert statuses == ["accepted"] + ["duplicate"] * 19
        runs = await finished_runs(session_maker, connected.pipeline_ids, 2)
        await completed_checks(app, 2)
    assert len(runs) == 2
    assert await delivery_rows(session_maker, delivery) == 1
    await assert_rerun_from_failed(session_maker, app, runs[1], source)
    assert runs[1].status == "failed"


async def test_check_suite_rerequest_reruns_the_latest_failed_run(
    api_client, app_api, temporal_client, app_forge, app_settings, installation, session_maker,
    tmp_path,
) -> None:  # fmt: skip
    """The suite's Re-run reruns the latest run of each pipeline on the commit; once that run
    has passed, another request reruns nothing. The first request's start is lost to a crash
    after its commit: its redelivery starts the rerun."""
    app, _ = app_forge
    async with run_workers(
        # The API starts reruns on the pipelines queue.
        temporal_client,
        app_settings,
        session_maker,
        PIPELINES_TASK_QUEUE,
        tmp_path,
    ):
        connected, source, head = await failed_source(
            api_client, session_maker, app, app_settings, installation, tmp_path,
            # Runs 1 and 2 of the pipeline fail their tests, the third passes.
            'test "$FORGELINE_RUN_NUMBER" -ge 3 || { echo failing-test; exit 4; }',
        )  # fmt: skip
        suite = {
            "action": "rerequested",
            "installation": {"id": installation},
            "check_suite": {"head_sha": head},
            "repository": {"full_name": "acme/widgets"},
        }
        delivery = str(uuid.uuid4())
        body, headers = app_delivery("check_suite", suite, delivery=delivery)

        async def crashed() -> Any:
            raise ConnectionError("the API process died before starting the rerun")

        with pytest.raises(ConnectionError):
            async with session_maker() as session:
                await app_deliveries.receive_app(
                    session,
                    crashed,
                    app_settings,
                    deliveries.Delivery("github", {k.lower(): v for k, v in headers.items()}, body),
                    deliveries.RejectedDeliveries(),
                )
        queued = await finished_runs_or_queued(session_maker, connected)
        assert [r.status for r in queued] == ["failed", "queued"]
        # The forge redelivers: the rerun the crash left unstarted starts now.
        r = await api_client.post("/v1/webhooks/github-app", content=body, headers=headers)
        assert r.status_code == 202 and r.json()["status"] == "duplicate", r.text
        runs = await finished_runs(session_maker, connected.pipeline_ids, 2)
        await completed_checks(app, 2)
        await assert_rerun_from_failed(session_maker, app, runs[1], source)
        assert runs[1].status == "failed"
        # Again: the latest run (the rerun) is rerun, and passes.
        r = await post(api_client, "check_suite", suite, str(uuid.uuid4()))
        assert r.status_code == 202 and r.json()["status"] == "accepted", r.text
        runs = await finished_runs(session_maker, connected.pipeline_ids, 3)
        await completed_checks(app, 3)
        await assert_rerun_from_failed(session_maker, app, runs[2], runs[1])
        assert runs[2].status == "success"
        # The commit's latest run passed: nothing to rerun, nothing written.
        delivery = str(uuid.uuid4())
        r = await post(api_client, "check_suite", suite, delivery)
        assert r.status_code == 202 and r.json()["status"] == "ignored", r.text
        assert await delivery_rows(session_maker, delivery) == 0
    assert len(await finished_runs(session_maker, connected.pipeline_ids, 3)) == 3
    assert len(app.check_runs) == 3


async def finished_runs_or_queued(session_maker: Any, connected: Connected) -> list[PipelineRun]:
    async with session_maker() as session:
        rows = await session.scalars(
            select(PipelineRun)
            .where(PipelineRun.pipeline_id.in_(connected.pipeline_ids))
            .order_by(PipelineRun.created_at)
        )
        return list(rows)
