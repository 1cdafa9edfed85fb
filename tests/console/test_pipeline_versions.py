"""The console's pipeline versions (history, diff) and YAML editor over HTTP with the real app:
schema errors shown with their paths, a stale or concurrent edit refused without a write,
hostile YAML refused, markup kept as text, viewers read only, other tenants 404."""

from __future__ import annotations

import asyncio
import html
import re

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.pipelines import Pipeline, PipelineStage
from tests.console.helpers import csrf_of, make_run, sign_in
from tests.factories import make_org

_TEXTAREA = re.compile(r'<textarea id="yaml"[^>]*>(.*?)</textarea>', re.S)


def editor_text(page: str) -> str:
    match = _TEXTAREA.search(page)
    assert match is not None, "no editor on the page"
    return html.unescape(match.group(1))


async def _version(session_maker: async_sessionmaker[AsyncSession], pipeline_id: object) -> int:
    async with session_maker() as session:
        version = await session.scalar(select(Pipeline.version).where(Pipeline.id == pipeline_id))
    assert version is not None
    return version


async def test_edit_as_yaml_makes_a_version_shown_with_its_diff(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(session_maker, org)
    await sign_in(api_client, org)
    editor = await api_client.get(f"/pipelines/{rows.pipeline_id}/edit")
    assert editor.status_code == 200 and 'label for="yaml"' in editor.text
    text = editor_text(editor.text)
    assert text.startswith("name: ci\n") and "- name: build" in text
    token = csrf_of(editor.text)
    edited = text + "- name: test\n  commands:\n  - echo '<script>alert(1)</script>'\n"
    saved = await api_client.post(
        f"/pipelines/{rows.pipeline_id}/edit",
        data={"csrf": token, "version": "1", "yaml": edited},
    )
    assert saved.status_code == 303, saved.text
    assert await _version(session_maker, rows.pipeline_id) == 2
    async with session_maker() as session:
        names = (
            await session.scalars(
                select(PipelineStage.name).where(PipelineStage.pipeline_id == rows.pipeline_id)
            )
        ).all()
    assert sorted(names) == ["build", "test"]
    page = await api_client.get(saved.headers["location"])
    assert page.status_code == 200
    assert '<span class="d-add">+- name: test' in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script>alert" not in page.text
    assert ">v2</a> update" in page.text and ">v1</a> create" in page.text
    older = await api_client.get(
        f"/pipelines/{rows.pipeline_id}/versions", params={"base": "2", "to": "1"}
    )
    assert '<span class="d-del">-- name: test' in older.text
    odd = await api_client.get(
        f"/pipelines/{rows.pipeline_id}/versions", params={"base": "99", "to": "x"}
    )
    assert odd.status_code == 404


async def test_schema_errors_are_shown_with_their_paths_and_nothing_is_written(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(session_maker, org)
    await sign_in(api_client, org)
    token = csrf_of((await api_client.get(f"/pipelines/{rows.pipeline_id}/edit")).text)
    url = f"/pipelines/{rows.pipeline_id}/edit"
    cases = {
        "name: ci\nstages:\n- name: Build!\n  commands: []\n  bogus: 1\n": "/stages/0/bogus",
        "name: ci\nstages:\n- name: a\n  commands: [x]\n  depends_on: [nope]\n": "unknown stage",
        "a: &a [1]\nb: *a\n": "/",
        "name: [unclosed\n": "/",
        "- just\n- a list\n": "/",
        "name: <b>x</b>\nstages: 3\n": "/stages",
    }
    for body, expected in cases.items():
        answer = await api_client.post(url, data={"csrf": token, "version": "1", "yaml": body})
        assert answer.status_code == 422, body
        assert "does not match the pipeline schema" in answer.text
        assert html.escape(expected, quote=False) in answer.text, (body, expected)
        assert editor_text(answer.text) == body  # the text is kept for fixing
        assert "<b>x</b>" not in answer.text
    huge = "name: ci\n" + "#" * 70_000
    assert (
        await api_client.post(url, data={"csrf": token, "version": "1", "yaml": huge})
    ).status_code == 422
    assert await _version(session_maker, rows.pipeline_id) == 1


async def test_a_stale_or_concurrent_edit_is_refused_and_viewers_only_read(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(session_maker, org)
    await sign_in(api_client, org)
    editor = await api_client.get(f"/pipelines/{rows.pipeline_id}/edit")
    token, text = csrf_of(editor.text), editor_text(editor.text)
    url = f"/pipelines/{rows.pipeline_id}/edit"
    changes = [text.replace("name: ci", f"name: ci-{n}", 1) for n in (1, 2)]
    answers = await asyncio.gather(
        *(api_client.post(url, data={"csrf": token, "version": "1", "yaml": c}) for c in changes)
    )
    assert sorted(a.status_code for a in answers) == [303, 409]
    stale = next(a for a in answers if a.status_code == 409)
    assert "is at version 2, not 1" in stale.text
    assert await _version(session_maker, rows.pipeline_id) == 2

    viewer = await make_org(session_maker, role="viewer")
    theirs = await make_run(session_maker, viewer)
    foreign = await api_client.post(
        f"/pipelines/{theirs.pipeline_id}/edit", data={"csrf": token, "version": "1", "yaml": text}
    )
    assert foreign.status_code == 404
    api_client.cookies.clear()
    await sign_in(api_client, viewer)
    page = await api_client.get(f"/pipelines/{theirs.pipeline_id}/edit")
    assert "can read this pipeline but not change it" in page.text and "<textarea" not in page.text
    refused = await api_client.post(
        f"/pipelines/{theirs.pipeline_id}/edit",
        data={"csrf": csrf_of(page.text), "version": "1", "yaml": text},
    )
    assert refused.status_code == 403
    assert await _version(session_maker, theirs.pipeline_id) == 1
