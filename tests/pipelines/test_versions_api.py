"""Pipeline versions: every change a numbered immutable version with its author; diffs;
concurrent writers numbered without gaps or duplicates; a stale If-Match is a 409; a crash
between the version and the pipeline update leaves neither; delete archives, runs kept."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import event, select, update

from db.models.pipeline_versions import PipelineVersion
from db.models.pipelines import Pipeline, PipelineRun
from db.session import session_scope
from tests.agent.support import make_project
from tests.factories import make_org
from tests.pipelines.support import ACCEPT_YAML, CANONICAL, YAML, create, headers, with_name

pytestmark = pytest.mark.timeout(120)


async def _versions(api_client, org, pipeline_id) -> list[dict[str, Any]]:
    resp = await api_client.get(f"/v1/pipelines/{pipeline_id}/versions", headers=org.headers)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["items"])


async def test_each_change_is_a_version_with_author_and_diff(api_client, session_maker):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    pipeline_id = await create(api_client, org, project_id)
    url = f"/v1/pipelines/{pipeline_id}"
    edited = CANONICAL.replace("  - npm test\n", "  - npm run lint\n  - npm test\n")
    assert (await api_client.put(url, content=edited, headers=headers(org, **YAML))).is_success
    renamed = await api_client.patch(url, json={"name": "web-app"}, headers=org.headers)
    assert renamed.status_code == 200 and renamed.json()["version"] == 3
    same = await api_client.patch(url, json={"name": "web-app"}, headers=org.headers)
    assert same.status_code == 200 and same.json()["version"] == 3  # nothing changed
    triggers = await api_client.patch(
        url, json={"triggers": {"manual": True}, "variables": {"A": "1"}}, headers=org.headers
    )
    assert triggers.status_code == 200 and triggers.json()["version"] == 4
    paused = await api_client.patch(url, json={"status": "paused"}, headers=org.headers)
    assert paused.json()["version"] == 4  # the status is not part of the definition

    versions = await _versions(api_client, org, pipeline_id)
    assert [(v["version"], v["change"]) for v in versions] == [
        (4, "update"),
        (3, "rename"),
        (2, "update"),
        (1, "create"),
    ]
    # An API key's changes are its creator's (and the key's).
    assert {v["author_user_id"] for v in versions} == {str(org.user_id)}
    assert {v["author_api_key_id"] for v in versions} == {str(org.api_key_id)}
    assert all(v["spec"] is None for v in versions)

    one = (await api_client.get(f"{url}/versions/1", headers=org.headers)).json()
    assert one["spec"]["name"] == "web" and one["spec"]["stages"][1]["commands"][0] == "npm test"
    as_yaml = await api_client.get(f"{url}/versions/1", headers=headers(org, **ACCEPT_YAML))
    assert as_yaml.content == CANONICAL.encode()
    current = await api_client.get(url, headers=headers(org, **ACCEPT_YAML))
    four = await api_client.get(f"{url}/versions/4", headers=headers(org, **ACCEPT_YAML))
    assert four.content == current.content

    diff = (await api_client.get(f"{url}/diff?from=1&to=2", headers=org.headers)).json()
    assert diff["diff"].startswith("--- web-app@v1\n+++ web-app@v2\n")
    assert "\n+  - npm run lint\n" in diff["diff"] and "\n-" not in diff["diff"].split("@@", 2)[2]
    rename = (await api_client.get(f"{url}/diff?from=2&to=3", headers=org.headers)).json()
    assert "-name: web\n+name: web-app\n" in rename["diff"]
    missing = await api_client.get(f"{url}/versions/9", headers=org.headers)
    assert missing.status_code == 404


async def test_concurrent_puts_keep_every_version_without_gaps(api_client, session_maker):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    pipeline_id = await create(api_client, org, project_id)
    url = f"/v1/pipelines/{pipeline_id}"
    bodies = [with_name(CANONICAL, f"web-{i}") for i in range(6)]
    answers = await asyncio.gather(
        *(api_client.put(url, content=b, headers=headers(org, **YAML)) for b in bodies)
    )
    assert [a.status_code for a in answers] == [200] * 6
    versions = await _versions(api_client, org, pipeline_id)
    assert sorted(v["version"] for v in versions) == list(range(1, 8))
    assert sorted(a.headers["ETag"] for a in answers) == sorted(f'"{n}"' for n in range(2, 8))
    # Last write wins: the pipeline is what its newest version says.
    newest = await api_client.get(f"{url}/versions/7", headers=headers(org, **ACCEPT_YAML))
    current = await api_client.get(url, headers=headers(org, **ACCEPT_YAML))
    assert newest.content == current.content and current.headers["ETag"] == '"7"'
    kept = {
        (await api_client.get(f"{url}/versions/{n}", headers=org.headers)).json()["spec"]["name"]
        for n in range(2, 8)
    }
    assert kept == {f"web-{i}" for i in range(6)}


async def test_stale_if_match_is_409_and_writes_nothing(api_client, session_maker):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    pipeline_id = await create(api_client, org, project_id)
    url = f"/v1/pipelines/{pipeline_id}"
    etag = (await api_client.get(url, headers=org.headers)).headers["ETag"]
    first, second = await asyncio.gather(
        api_client.put(
            url,
            content=with_name(CANONICAL, "a"),
            headers=headers(org, **YAML, **{"If-Match": etag}),
        ),
        api_client.put(
            url,
            content=with_name(CANONICAL, "b"),
            headers=headers(org, **YAML, **{"If-Match": etag}),
        ),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409]
    loser = first if first.status_code == 409 else second
    assert loser.json()["current_version"] == 2
    assert len(await _versions(api_client, org, pipeline_id)) == 2
    patch = await api_client.patch(
        url, json={"name": "c"}, headers=headers(org, **{"If-Match": etag})
    )
    assert patch.status_code == 409
    ok = await api_client.patch(
        url, json={"name": "c"}, headers=headers(org, **{"If-Match": '"2"'})
    )
    assert ok.status_code == 200 and ok.json()["version"] == 3
    bad = await api_client.put(
        url, content=CANONICAL, headers=headers(org, **YAML, **{"If-Match": "x"})
    )
    assert bad.status_code == 422


async def test_crash_between_version_and_pipeline_update_leaves_neither(
    api_client, session_maker, engine, temporal_client
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    pipeline_id = await create(api_client, org, project_id)
    before = await api_client.get(
        f"/v1/pipelines/{pipeline_id}", headers=headers(org, **ACCEPT_YAML)
    )

    def crash(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE PIPELINES ") and str(pipeline_id) in str(
            parameters
        ):
            raise ConnectionResetError("the API process died here")

    # The version row is written, then the process "dies" before the pipeline row changes.
    event.listen(engine.sync_engine, "before_cursor_execute", crash)
    try:
        from core.pipelines import service
        from core.pipelines.document import parse_yaml
        from core.principal import Principal

        principal = Principal(
            organization_id=org.org_id, user_id=org.user_id, api_key_id=None, role="owner"
        )
        async with session_maker() as session:
            with pytest.raises(ConnectionResetError):
                await service.put_document(
                    session,
                    temporal_client,
                    principal,
                    pipeline_id,
                    parse_yaml(with_name(CANONICAL, "x")),
                )
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", crash)
    async with session_maker() as session:
        rows = (
            await session.scalars(
                select(PipelineVersion.version).where(PipelineVersion.pipeline_id == pipeline_id)
            )
        ).all()
        pipeline = await session.get(Pipeline, pipeline_id)
    assert list(rows) == [1] and pipeline is not None and pipeline.version == 1
    after = await api_client.get(
        f"/v1/pipelines/{pipeline_id}", headers=headers(org, **ACCEPT_YAML)
    )
    assert after.content == before.content


async def test_delete_archives_and_keeps_runs(api_client, session_maker, temporal_client):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    pipeline_id = await create(api_client, org, project_id)
    url = f"/v1/pipelines/{pipeline_id}"
    assert (
        await api_client.put(url, content=with_name(CANONICAL, "v2"), headers=headers(org, **YAML))
    ).is_success
    run = await api_client.post(f"{url}/runs", json={}, headers=org.headers)
    assert run.status_code == 202, run.text
    body = run.json()
    assert body["pipeline_version"] == 2 and body["pipeline_source"] == "stored"
    # Nothing executes it here: finish it as a worker would have.
    await temporal_client.get_workflow_handle(body["workflow_id"]).terminate("test")
    async with session_scope(session_maker) as session:
        await session.execute(
            update(PipelineRun)
            .where(PipelineRun.id == uuid.UUID(body["id"]))
            .values(status="success")
        )

    assert (await api_client.delete(url, headers=org.headers)).status_code == 204
    assert (await api_client.get(url, headers=org.headers)).status_code == 404
    archived = await api_client.get(url, params={"include_archived": "true"}, headers=org.headers)
    assert archived.status_code == 200 and archived.json()["archived_at"] is not None
    listed = await api_client.get(f"/v1/projects/{project_id}/pipelines", headers=org.headers)
    assert listed.json()["items"] == []
    kept = await api_client.get(f"/v1/runs/{body['id']}", headers=org.headers)
    assert kept.status_code == 200 and kept.json()["pipeline_version"] == 2
    runs = await api_client.get(f"{url}/runs", headers=org.headers)
    assert [r["id"] for r in runs.json()["items"]] == [body["id"]]
    assert (await api_client.post(f"{url}/runs", json={}, headers=org.headers)).status_code == 404
    assert (
        await api_client.put(url, content=CANONICAL, headers=headers(org, **YAML))
    ).status_code == 404
    assert (await api_client.delete(url, headers=org.headers)).status_code == 404
    assert len(await _versions(api_client, org, pipeline_id)) == 2
