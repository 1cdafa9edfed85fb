"""`rerun --from failed`: the stages reused from the earlier run show that run's log and artifacts
in the new run, and the API names the run that produced them. Reruns requested at once each get
the whole log, once; another tenant still sees nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.worker import Worker

from tests.factories import make_org
from tests.runs.helpers import make_pipeline, run_row, stage, wait_for

LINES = [f"line-{i}" for i in range(1, 31)]


async def finished(session_maker: async_sessionmaker[AsyncSession], run_id: str) -> str:
    async def done() -> bool:
        status = (await run_row(session_maker, uuid.UUID(run_id))).status
        return status in ("success", "failed", "cancelled")

    await wait_for(done, timeout=90)
    return (await run_row(session_maker, uuid.UUID(run_id))).status


async def test_reused_stages_show_the_earlier_runs_log_and_artifacts(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    worker: Worker,
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [
            stage(
                "build",
                ["for i in $(seq 1 30); do echo line-$i; done", "echo bin > app.bin"],
                artifact_paths=["app.bin"],
            ),
            # Fails on the first run only.
            stage("test", '[ "$FORGELINE_RUN_NUMBER" -gt 1 ]', 1),
        ],
    )
    created = await api_client.post(
        f"/v1/pipelines/{pipeline_id}/runs", json={"branch": "main"}, headers=org.headers
    )
    assert created.status_code == 202, created.text
    first = created.json()["id"]
    assert await finished(session_maker, first) == "failed"

    # Two reruns requested at once: each reuses the build of the first run.
    reruns = await asyncio.gather(
        *(
            api_client.post(
                f"/v1/runs/{first}/rerun", params={"from": "failed"}, headers=org.headers
            )
            for _ in range(2)
        )
    )
    assert all(r.status_code == 202 for r in reruns), [r.text for r in reruns]
    for rerun in reruns:
        run_id = rerun.json()["id"]
        assert await finished(session_maker, run_id) == "success"
        detail: dict[str, Any] = (
            await api_client.get(f"/v1/runs/{run_id}", headers=org.headers)
        ).json()
        stages = {s["stage_name"]: s for s in detail["stages"]}
        assert stages["build"]["reused_from_id"] is not None
        assert stages["build"]["reused_from_run_id"] == first
        assert stages["build"]["log_line_count"] > 0
        assert stages["test"]["reused_from_run_id"] is None

        log = await api_client.get(f"/v1/runs/{run_id}/stages/build/logs", headers=org.headers)
        assert log.status_code == 200, log.text
        assert [x for x in log.text.splitlines() if x.startswith("line-")] == LINES

        arts = (await api_client.get(f"/v1/runs/{run_id}/artifacts", headers=org.headers)).json()
        assert [(a["name"], a["produced_by_run_id"]) for a in arts] == [("app.bin", first)]
        blob = await api_client.get(
            f"/v1/runs/{run_id}/artifacts/{arts[0]['id']}", headers=org.headers
        )
        assert blob.status_code == 200 and blob.content == b"bin\n"

    # Another organization reaches none of it through the rerun.
    stranger = await make_org(session_maker)
    run_id = reruns[0].json()["id"]
    arts = (await api_client.get(f"/v1/runs/{run_id}/artifacts", headers=org.headers)).json()
    for path in (
        f"/v1/runs/{run_id}/artifacts",
        f"/v1/runs/{run_id}/artifacts/{arts[0]['id']}",
        f"/v1/runs/{run_id}/stages/build/logs",
    ):
        assert (await api_client.get(path, headers=stranger.headers)).status_code == 404, path
    # An artifact of the first run is not reachable through an unrelated run of the same org.
    other = await api_client.post(
        f"/v1/pipelines/{pipeline_id}/runs", json={"branch": "main"}, headers=org.headers
    )
    other_id = other.json()["id"]
    await finished(session_maker, other_id)
    missing = await api_client.get(
        f"/v1/runs/{other_id}/artifacts/{arts[0]['id']}", headers=org.headers
    )
    assert missing.status_code == 404
