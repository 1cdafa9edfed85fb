"""The console's run list (filters in the query string), stage graph, artifacts and run trigger,
over HTTP with the real app: tenancy, CSRF, hostile input."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.pipelines.document import PipelineDocument, canonical_data
from db.models.pipeline_versions import PipelineVersion
from db.models.pipelines import Artifact, PipelineRun, PipelineStage
from db.session import session_scope
from forgeline.settings import Settings
from infra.storage import create_object_store
from tests.console.helpers import RunRows, csrf_of, make_run, sign_in
from tests.factories import OrgFixture, make_org


async def _more_runs(
    session_maker: async_sessionmaker[AsyncSession], org: OrgFixture, rows: RunRows
) -> None:
    """Runs #2 (success on main, push) and #3 (failed on '<b>x</b>', schedule)."""
    async with session_scope(session_maker) as session:
        for number, status, branch, trigger in (
            (2, "success", "main", "push"),
            (3, "failed", "<b>x</b>", "schedule"),
        ):
            session.add(
                PipelineRun(
                    id=uuid.uuid4(),
                    pipeline_id=rows.pipeline_id,
                    organization_id=org.org_id,
                    project_id=rows.project_id,
                    run_number=number,
                    status=status,
                    branch=branch,
                    trigger=trigger,
                )
            )


async def test_the_run_list_filters_by_status_branch_and_trigger_from_the_query_string(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(session_maker, org)
    await _more_runs(session_maker, org, rows)
    await sign_in(api_client, org)
    base = f"/projects/{rows.project_id}/runs"
    everything = await api_client.get(base)
    assert everything.status_code == 200
    assert all(f">#{n}</a>" in everything.text for n in (1, 2, 3))
    by_status = await api_client.get(base, params={"status": "success"})
    assert ">#2</a>" in by_status.text and ">#1</a>" not in by_status.text
    assert '<option value="success" selected>' in by_status.text
    by_branch = await api_client.get(base, params={"branch": "<b>x</b>"})
    assert ">#3</a>" in by_branch.text and ">#2</a>" not in by_branch.text
    assert "<b>x</b>" not in by_branch.text and "&lt;b&gt;x&lt;/b&gt;" in by_branch.text
    by_trigger = await api_client.get(base, params={"trigger": "push", "status": "success"})
    assert ">#2</a>" in by_trigger.text and ">#3</a>" not in by_trigger.text
    # Unknown filter values are no filter; a forged cursor is a 422, never a 500.
    odd = await api_client.get(
        base, params={"status": "nope", "trigger": "' OR 1=1", "pipeline": "x"}
    )
    assert odd.status_code == 200 and ">#3</a>" in odd.text
    forged = await api_client.get(base, params={"cursor": "not-a-cursor"})
    assert forged.status_code == 422


async def test_the_run_page_draws_the_stage_graph_from_needs_with_status_and_duration(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(session_maker, org)
    async with session_scope(session_maker) as session:
        for position, name, needs in ((1, "test", ["build"]), (1, "lint", ["build"]),
                                      (2, "deploy", ["test", "lint"])):  # fmt: skip
            session.add(
                PipelineStage(
                    pipeline_id=rows.pipeline_id,
                    name=name,
                    position=position,
                    stage_type="custom",
                    commands=[{"run": "true"}],
                    depends_on=needs,
                )
            )
    await sign_in(api_client, org)
    run = await api_client.get(f"/runs/{rows.run_id}")
    assert run.status_code == 200
    svg = run.text[run.text.index("<svg") : run.text.index("</svg>")]
    assert svg.count('class="edge"') == 4  # build->test, build->lint, test->deploy, lint->deploy
    assert "deploy needs test" in svg and "deploy needs build" not in svg
    assert 'aria-label="build: failed, 1.5 s"' in svg
    assert 'aria-label="deploy: not started"' in svg
    # Log lines are anchored (#stage-0-L1) for a link to a line.
    assert 'id="stage-0-L1"' in run.text and 'href="#stage-0-L1"' in run.text
    pipeline = await api_client.get(f"/pipelines/{rows.pipeline_id}")
    assert pipeline.status_code == 200 and pipeline.text.count('class="edge"') == 4


async def test_artifacts_download_for_the_owner_only(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    org, other = await make_org(session_maker), await make_org(session_maker)
    rows, theirs = await make_run(session_maker, org), await make_run(session_maker, other)
    store = create_object_store(settings)
    ids = {}
    for owner, key_rows in (("mine", rows), ("theirs", theirs)):
        key = f"artifacts/{key_rows.run_id}/{owner}.txt"
        store.put_bytes(key, f"{owner} bytes".encode())
        artifact = Artifact(
            id=uuid.uuid4(),
            run_id=key_rows.run_id,
            name=f'dist/{owner}"; evil=.txt',
            object_key=key,
            size_bytes=len(f"{owner} bytes"),
        )
        async with session_scope(session_maker) as session:
            session.add(artifact)
        ids[owner] = artifact.id
    await sign_in(api_client, org)
    run = await api_client.get(f"/runs/{rows.run_id}")
    assert f'href="/runs/{rows.run_id}/artifacts/{ids["mine"]}"' in run.text
    got = await api_client.get(f"/runs/{rows.run_id}/artifacts/{ids['mine']}")
    assert got.status_code == 200 and got.content == b"mine bytes"
    assert got.headers["content-disposition"] == 'attachment; filename="mineevil.txt"'
    for path in (
        f"/runs/{theirs.run_id}/artifacts/{ids['theirs']}",
        f"/runs/{rows.run_id}/artifacts/{ids['theirs']}",
        f"/runs/{rows.run_id}/artifacts/..%2F..%2Fetc",
    ):
        assert (await api_client.get(path)).status_code == 404, path


async def test_triggering_a_run_needs_csrf_the_tenant_and_a_valid_branch(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org, other = await make_org(session_maker), await make_org(session_maker)
    rows, theirs = await make_run(session_maker, org), await make_run(session_maker, other)
    await sign_in(api_client, org)
    page = await api_client.get(f"/pipelines/{rows.pipeline_id}")
    token = csrf_of(page.text)
    url = f"/pipelines/{rows.pipeline_id}/runs"
    assert (await api_client.post(url, data={"branch": "main"})).status_code == 403
    assert (await api_client.post(url, data={"csrf": "x" * 64})).status_code == 403
    bad = await api_client.post(url, data={"csrf": token, "branch": "a..b;rm -rf"})
    assert bad.status_code == 422
    foreign = await api_client.post(
        f"/pipelines/{theirs.pipeline_id}/runs", data={"csrf": token, "branch": "main"}
    )
    assert foreign.status_code == 404
    assert (await api_client.get(f"/pipelines/{theirs.pipeline_id}")).status_code == 404
    # Two triggers at once: two runs with distinct numbers (the counter's row lock).
    answers = await asyncio.gather(
        *(api_client.post(url, data={"csrf": token, "branch": "main"}) for _ in range(2))
    )
    assert [a.status_code for a in answers] == [303, 303]
    async with session_maker() as session:
        numbers = (
            await session.scalars(
                select(PipelineRun.run_number).where(
                    PipelineRun.pipeline_id == rows.pipeline_id, PipelineRun.id != rows.run_id
                )
            )
        ).all()
    assert sorted(numbers) == [2, 3]
    async with session_scope(session_maker) as session:  # the started runs stop here
        await session.execute(
            update(PipelineRun)
            .where(PipelineRun.pipeline_id == rows.pipeline_id, PipelineRun.run_number > 1)
            .values(status="cancelled")
        )


async def test_the_run_header_is_polled_until_the_run_finishes_and_only_by_its_tenant(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org, other = await make_org(session_maker), await make_org(session_maker)
    rows = await make_run(session_maker, org, status="running", log_tail="")
    theirs = await make_run(session_maker, other)
    await sign_in(api_client, org)
    page = await api_client.get(f"/runs/{rows.run_id}")
    assert f'hx-get="/runs/{rows.run_id}/head"' in page.text and ">Cancel<" in page.text
    head = await api_client.get(f"/runs/{rows.run_id}/head")
    assert head.status_code == 200 and 'hx-trigger="every 2s"' in head.text
    assert "<html" not in head.text
    async with session_scope(session_maker) as session:
        await session.execute(
            update(PipelineRun).where(PipelineRun.id == rows.run_id).values(status="failed")
        )
    head = await api_client.get(f"/runs/{rows.run_id}/head")
    assert "hx-trigger" not in head.text and "Re-run from failed" in head.text
    assert (await api_client.get(f"/runs/{theirs.run_id}/head")).status_code == 404


async def test_a_viewer_follows_runs_but_is_told_why_there_are_no_run_actions(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    viewer = await make_org(session_maker, role="viewer")
    rows = await make_run(session_maker, viewer)
    await sign_in(api_client, viewer)
    page = await api_client.get(f"/runs/{rows.run_id}")
    assert page.status_code == 200
    assert "Your role can follow runs but not start, cancel or re-run them." in page.text
    assert "Re-run from failed" not in page.text
    pipeline = await api_client.get(f"/pipelines/{rows.pipeline_id}")
    assert "Run pipeline" not in pipeline.text and "not run it" in pipeline.text
    token = csrf_of(page.text)
    for path in (f"/runs/{rows.run_id}/rerun", f"/pipelines/{rows.pipeline_id}/runs"):
        assert (await api_client.post(path, data={"csrf": token})).status_code == 403


async def test_the_graph_is_the_runs_pipeline_version_or_what_its_pipeline_file_ran(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(session_maker, org)
    then = PipelineDocument.model_validate(
        {"name": "ci", "stages": [
            {"name": "build", "commands": ["true"]},
            {"name": "old-check", "commands": ["true"], "depends_on": ["build"]},
        ]}
    )  # fmt: skip
    async with session_scope(session_maker) as session:
        session.add(
            PipelineVersion(
                pipeline_id=rows.pipeline_id,
                organization_id=org.org_id,
                version=1,
                change="create",
                spec=canonical_data(then),
            )
        )
        await session.execute(
            update(PipelineRun).where(PipelineRun.id == rows.run_id).values(pipeline_version=1)
        )
    await sign_in(api_client, org)
    page = await api_client.get(f"/runs/{rows.run_id}")
    svg = page.text[page.text.index("<svg") : page.text.index("</svg>")]
    assert "old-check needs build" in svg and 'data-stage="old-check"' in page.text
    async with session_scope(session_maker) as session:
        await session.execute(
            update(PipelineRun)
            .where(PipelineRun.id == rows.run_id)
            .values(pipeline_source="repository")
        )
    page = await api_client.get(f"/runs/{rows.run_id}")
    assert 'data-stage="build"' in page.text and "old-check" not in page.text
    assert 'class="edge"' not in page.text
