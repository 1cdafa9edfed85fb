"""The forge's "Re-run" on a check run: the App's check_run rerequested delivery reruns the run
from its failed stage (earlier stages reused), once however often it is redelivered; another
installation's request for the same run starts nothing. Real Postgres, Temporal, git and the
sandbox runner; the GitHub App is a fake HTTP server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import select

from db.models.pipelines import StageExecution
from forgeline.settings import PIPELINES_TASK_QUEUE
from tests.integrations.app_support import app_delivery
from tests.integrations.fake_github_app import FakeGitHubApp
from tests.integrations.support import (
    commit,
    connect_repo,
    connect_through_app,
    make_git_repo,
    push_main,
    run_workers,
    runs_of,
)
from tests.runs.helpers import wait_for


async def finished_runs(session_maker: Any, pipeline_ids: list[uuid.UUID], count: int) -> list[Any]:
    async def done() -> bool:
        runs = await runs_of(session_maker, pipeline_ids)
        return len(runs) >= count and all(r.status in ("success", "failed") for r in runs)

    await wait_for(done, timeout=90)
    return await runs_of(session_maker, pipeline_ids)


async def completed_checks(app: FakeGitHubApp, count: int) -> None:
    async def done() -> bool:
        runs = list(app.check_runs.values())
        return len(runs) >= count and all(app.sequence(r.id)[-1][0] == "completed" for r in runs)

    await wait_for(done, timeout=60)


async def test_rerequested_check_run_reruns_from_failed_stage(
    api_client,
    app_api,
    temporal_client,
    app_forge,
    app_settings,
    installation,
    session_maker,
    tmp_path,
) -> None:
    app, _ = app_forge
    repo, first = make_git_repo(tmp_path)
    head = commit(repo, {"src/app.py": "print(7)\n"})
    connected = await connect_repo(
        session_maker,
        app_settings,
        repo,
        pipelines=[{"on_push": {}}],
        stages=[
            {"name": "build", "run": "echo built"},
            {"name": "test", "run": "echo failing-test; exit 4"},
        ],
    )
    await connect_through_app(session_maker, connected, installation)
    async with run_workers(
        temporal_client, app_settings, session_maker, PIPELINES_TASK_QUEUE, tmp_path
    ):
        await push_main(api_client, connected, head, first)
        (source,) = await finished_runs(session_maker, connected.pipeline_ids, 1)
        await completed_checks(app, 1)
        assert source.status == "failed"
        rerequest = {
            "action": "rerequested",
            "installation": {"id": installation},
            "check_run": {"external_id": str(source.id), "head_sha": head},
            "repository": {"full_name": "acme/widgets"},
        }
        # Another installation asking for this run's rerun is refused: it covers no repository.
        body, headers = app_delivery(
            "check_run", {**rerequest, "installation": {"id": installation + 1}}
        )
        r = await api_client.post("/v1/webhooks/github-app", content=body, headers=headers)
        assert r.status_code == 404, r.text
        # The same delivery five times at once: one rerun.
        body, headers = app_delivery("check_run", rerequest)
        answers = await asyncio.gather(
            *(
                api_client.post("/v1/webhooks/github-app", content=body, headers=headers)
                for _ in range(5)
            )
        )
        assert sorted(a.json()["status"] for a in answers) == ["accepted"] + ["duplicate"] * 4
        runs = await finished_runs(session_maker, connected.pipeline_ids, 2)
        await completed_checks(app, 2)
    assert len(runs) == 2
    rerun = runs[1]
    assert rerun.metadata_["rerun_of"] == str(source.id)
    async with session_maker() as session:
        stages = {
            s.stage_name: s
            for s in await session.scalars(
                select(StageExecution).where(StageExecution.run_id == rerun.id)
            )
        }
    assert stages["build"].reused_from_id is not None  # reused, not run again
    assert stages["test"].reused_from_id is None
    # The rerun reports on a check run of its own.
    second = [c for c in app.check_runs.values() if c.fields["external_id"] == str(rerun.id)]
    assert len(second) == 1 and app.sequence(second[0].id)[-1] == ("completed", "failure")
