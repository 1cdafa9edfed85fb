"""The console's environments and deployments page: what is live where, and approve/reject."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.deployments import Deployment
from db.session import session_scope
from tests.console.helpers import csrf_of, make_deployment, make_run, sign_in
from tests.factories import make_org


async def test_live_versions_and_urls_are_shown_and_hostile_values_escaped(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(session_maker, org)
    await make_deployment(
        session_maker, org, rows.project_id, status="active", url="https://site.example.test/"
    )
    await make_deployment(
        session_maker,
        org,
        rows.project_id,
        status="active",
        version="<b>v2</b>",
        url="javascript:alert(1)",
    )
    await sign_in(api_client, org)
    answer = await api_client.get(f"/projects/{rows.project_id}/deployments")
    assert answer.status_code == 200
    assert '<a href="https://site.example.test/"' in answer.text
    assert "&lt;b&gt;v2&lt;/b&gt;" in answer.text and "<b>v2" not in answer.text
    assert 'href="javascript:' not in answer.text


async def test_decisions_need_csrf_a_reason_and_the_same_tenant(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org, other = await make_org(session_maker), await make_org(session_maker)
    rows = await make_run(session_maker, org)
    waiting = await make_deployment(session_maker, org, rows.project_id, status="awaiting_approval")
    theirs_rows = await make_run(session_maker, other)
    theirs = await make_deployment(
        session_maker, other, theirs_rows.project_id, status="awaiting_approval"
    )
    await sign_in(api_client, org)
    page = await api_client.get(f"/projects/{rows.project_id}/deployments")
    assert f'action="/deployments/{waiting}/approve"' in page.text
    assert 'label for="reason-' in page.text
    token = csrf_of(page.text)
    no_token = await api_client.post(f"/deployments/{waiting}/approve", data={"reason": "ok"})
    assert no_token.status_code == 403
    for reason in ("", "   ", "x" * 2001, "bad\x00byte"):
        blank = await api_client.post(
            f"/deployments/{waiting}/approve", data={"csrf": token, "reason": reason}
        )
        assert blank.status_code == 422, reason
    other_tenant = await api_client.post(
        f"/deployments/{theirs}/reject", data={"csrf": token, "reason": "no"}
    )
    assert other_tenant.status_code == 404
    unknown = await api_client.post(
        f"/deployments/{waiting}/delete", data={"csrf": token, "reason": "no"}
    )
    assert unknown.status_code == 404
    hostile = await api_client.post(
        "/deployments/%3Cx%3E/approve", data={"csrf": token, "reason": "ok"}
    )
    assert hostile.status_code == 404
    async with session_scope(session_maker) as session:
        statuses = set(
            (await session.scalars(select(Deployment.status).where(
                Deployment.id.in_([waiting, theirs])
            ))).all()
        )  # fmt: skip
    assert statuses == {"awaiting_approval"}
    assert (
        await api_client.get(f"/projects/{theirs_rows.project_id}/deployments")
    ).status_code == 404
