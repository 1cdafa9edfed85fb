"""The console's project creation and settings, members and roles, and billing pages over HTTP
with the real app: every form refuses a cross-site request, other tenants' IDs are 404, hostile
input is refused without a partial write."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.accounts import OrganizationMember
from db.models.billing import Invoice
from db.models.projects import Project, Repository
from db.session import session_scope
from forgeline.local_paths import organization_roots
from forgeline.settings import Settings
from tests.console.helpers import csrf_of, make_run, sign_in
from tests.factories import OrgFixture, make_org


async def _projects_named(
    session_maker: async_sessionmaker[AsyncSession], org: OrgFixture, name: str
) -> int:
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Project)
            .where(Project.organization_id == org.org_id, Project.name == name)
        )
    return int(count or 0)


async def test_a_project_is_created_with_its_repository_or_not_at_all(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    org = await make_org(session_maker)
    checkout = organization_roots(settings, org.org_id)[0] / uuid.uuid4().hex
    checkout.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    await sign_in(api_client, org)
    form = await api_client.get("/projects/new")
    assert form.status_code == 200 and 'label for="r-url"' in form.text
    token = csrf_of(form.text)
    base = {"name": "<b>Shop</b>", "project_type": "static_site", "provider": "local"}
    assert (await api_client.post("/projects", data=base)).status_code == 403
    # A repository outside the organization's roots: refused, and no project is left behind.
    outside = await api_client.post(
        "/projects", data={**base, "csrf": token, "repository_url": "/etc"}
    )
    assert outside.status_code == 422 and 'role="alert"' in outside.text
    assert await _projects_named(session_maker, org, "<b>Shop</b>") == 0
    bad_type = await api_client.post(
        "/projects", data={**base, "csrf": token, "project_type": "<script>"}
    )
    assert bad_type.status_code == 422 and "<script>" not in bad_type.text
    made = await api_client.post(
        "/projects", data={**base, "csrf": token, "repository_url": str(checkout)}
    )
    assert made.status_code == 303, made.text
    project_id = made.headers["location"].rsplit("/", 1)[-1]
    async with session_maker() as session:
        repo = await session.scalar(
            select(Repository).where(Repository.project_id == uuid.UUID(project_id))
        )
    assert repo is not None and repo.provider == "local"
    settings_page = await api_client.get(f"/projects/{project_id}/settings")
    assert "&lt;b&gt;Shop&lt;/b&gt;" in settings_page.text and "<b>Shop" not in settings_page.text
    assert "Update repository" in settings_page.text


async def test_settings_and_repository_forms_need_csrf_and_the_tenant(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org, other = await make_org(session_maker), await make_org(session_maker)
    rows, theirs = await make_run(session_maker, org), await make_run(session_maker, other)
    await sign_in(api_client, org)
    page = await api_client.get(f"/projects/{rows.project_id}/settings")
    token = csrf_of(page.text)
    for form in ("settings", "repository"):
        url = f"/projects/{rows.project_id}/{form}"
        assert (await api_client.post(url, data={"name": "x"})).status_code == 403, form
        forged = token[:-1] + ("1" if token.endswith("0") else "0")
        wrong = await api_client.post(url, data={"csrf": forged, "name": "x"})
        assert wrong.status_code == 403, form
        foreign = await api_client.post(
            f"/projects/{theirs.project_id}/{form}",
            data={"csrf": token, "name": "taken over", "repository_url": "/tmp"},
        )
        assert foreign.status_code == 404, form
    assert (await api_client.get(f"/projects/{theirs.project_id}/settings")).status_code == 404
    renamed = await api_client.post(
        f"/projects/{rows.project_id}/settings",
        data={"csrf": token, "name": "Renamed", "description": "about"},
    )
    assert renamed.status_code == 303
    assert "Renamed" in (await api_client.get(f"/projects/{rows.project_id}/settings")).text
    too_long = await api_client.post(
        f"/projects/{rows.project_id}/settings", data={"csrf": token, "name": "x" * 300}
    )
    assert too_long.status_code == 422


async def test_members_page_shows_what_each_role_may_do_and_only_admins_change_roles(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org, other = await make_org(session_maker, role="viewer"), await make_org(session_maker)
    async with session_maker() as session:
        owner_member = await session.scalar(
            select(OrganizationMember.id).where(
                OrganizationMember.organization_id == org.org_id,
                OrganizationMember.user_id == org.owner_user_id,
            )
        )
        viewer_member = await session.scalar(
            select(OrganizationMember.id).where(OrganizationMember.user_id == org.user_id)
        )
        foreign_member = await session.scalar(
            select(OrganizationMember.id).where(OrganizationMember.organization_id == other.org_id)
        )
    await sign_in(api_client, org)  # the viewer
    page = await api_client.get("/members")
    assert page.status_code == 200 and "Only owners and admins change roles." in page.text
    assert "Manage members and roles" in page.text and "/role" not in page.text
    token = csrf_of(page.text)
    refused = await api_client.post(
        f"/members/{viewer_member}/role", data={"csrf": token, "role": "owner"}
    )
    assert refused.status_code == 403
    api_client.cookies.clear()
    owner = OrgFixture(**{**org.__dict__, "email": org.email.replace("viewer-", "owner-")})
    await sign_in(api_client, owner)
    page = await api_client.get("/members")
    assert f'action="/members/{viewer_member}/role"' in page.text
    token = csrf_of(page.text)
    url = f"/members/{viewer_member}/role"
    assert (await api_client.post(url, data={"role": "member"})).status_code == 403
    assert (await api_client.post(url, data={"csrf": token, "role": "god"})).status_code == 422
    foreign = await api_client.post(
        f"/members/{foreign_member}/role", data={"csrf": token, "role": "viewer"}
    )
    assert foreign.status_code == 404
    last_owner = await api_client.post(
        f"/members/{owner_member}/role", data={"csrf": token, "role": "viewer"}
    )
    assert last_owner.status_code == 409
    changed = await api_client.post(url, data={"csrf": token, "role": "member"})
    assert changed.status_code == 303
    async with session_maker() as session:
        role = await session.scalar(
            select(OrganizationMember.role).where(OrganizationMember.id == viewer_member)
        )
    assert role == "member"


async def test_billing_shows_the_plan_usage_and_own_invoices_only(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org, other = await make_org(session_maker), await make_org(session_maker)
    ids = {}
    for owner, number in ((org, "INV-<i>1</i>"), (other, "INV-THEIRS")):
        invoice = Invoice(
            id=uuid.uuid4(),
            organization_id=owner.org_id,
            invoice_number=f"{number}-{uuid.uuid4().hex[:6]}",
            period_start=datetime(2026, 10, 1, tzinfo=UTC),
            period_end=datetime(2026, 11, 1, tzinfo=UTC),
            status="open",
            line_items=[
                {
                    "kind": "usage",
                    "description": "Build minutes",
                    "quantity": "120",
                    "unit_price": "0.01",
                    "amount": "1.20",
                    "usage_type": "build_minutes",
                }
            ],
            subtotal=Decimal("1.20"),
            total=Decimal("1.20"),
        )
        async with session_scope(session_maker) as session:
            session.add(invoice)
        ids[owner.org_id] = invoice.id
    await sign_in(api_client, org)
    page = await api_client.get("/billing")
    assert page.status_code == 200
    assert "INV-&lt;i&gt;1&lt;/i&gt;" in page.text and "INV-THEIRS" not in page.text
    assert "1.20 USD" in page.text and "Usage in " in page.text
    detail = await api_client.get(f"/billing/invoices/{ids[org.org_id]}")
    assert detail.status_code == 200 and "Build minutes" in detail.text
    assert (await api_client.get(f"/billing/invoices/{ids[other.org_id]}")).status_code == 404
    assert (await api_client.get("/billing/invoices/%3Cx%3E")).status_code == 404
    member = await make_org(session_maker, role="member")
    api_client.cookies.clear()
    await sign_in(api_client, member)
    assert (await api_client.get("/billing")).status_code == 403  # members do not read billing
