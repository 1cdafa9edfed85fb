"""A signed-in user whose role lacks the scope a posted form or a page needs gets the console's
error page (403, their own navigation, the scope named), and nothing is written; a form without
its CSRF token is still refused first, as the expired-form page."""

from __future__ import annotations

import asyncio
import html

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.projects import Project
from tests.agent.support import make_project
from tests.console.helpers import csrf_of, sign_in
from tests.factories import make_org


async def _projects(session_maker: async_sessionmaker[AsyncSession]) -> int:
    async with session_maker() as session:
        return int(await session.scalar(select(func.count()).select_from(Project)) or 0)


async def test_a_form_posted_without_its_scope_is_the_error_page(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    viewer = await make_org(session_maker, role="viewer")
    project = await make_project(session_maker, viewer.org_id, "/nonexistent/repo")
    await sign_in(api_client, viewer)
    overview = await api_client.get(f"/projects/{project}")
    token = csrf_of(overview.text)
    before = await _projects(session_maker)
    forms = {
        "/projects": ({"name": "x", "project_type": "web"}, "projects:write"),
        f"/projects/{project}/settings": ({"name": "<script>y</script>"}, "projects:write"),
        f"/projects/{project}/agent-tasks": ({}, "pipelines:write"),
        f"/runs/{project}/cancel": ({}, "pipelines:write"),
    }
    # The same refused forms, posted at once: each answer is the same page.
    answers = await asyncio.gather(
        *(api_client.post(url, data={**data, "csrf": token}) for url, (data, _) in forms.items())
    )
    for (url, (_, scope)), answer in zip(forms.items(), answers, strict=True):
        assert answer.status_code == 403, (url, answer.status_code)
        assert f"This needs the {scope!r} scope" in html.unescape(answer.text), url
        assert answer.headers["Cache-Control"] == "no-store"
        assert "Content-Security-Policy" in answer.headers
        assert 'action="/logout"' in answer.text, url  # the signed-in user's own page
    assert await _projects(session_maker) == before
    # Without the CSRF token the form is refused before any scope is looked at.
    forged = await api_client.post("/projects", data={"name": "x"})
    assert forged.status_code == 403 and "The form expired" in forged.text


async def test_a_page_read_without_its_scope_is_the_error_page(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    viewer = await make_org(session_maker, role="viewer")
    await sign_in(api_client, viewer)
    for url in ("/billing", "/billing/invoices/not-a-uuid", "/billing/invoices/%00"):
        answer = await api_client.get(url)
        assert answer.status_code == 403, (url, answer.status_code)
        assert "This needs the 'billing:read' scope" in html.unescape(answer.text), url
        assert 'action="/logout"' in answer.text, url
