"""A protected deployment in a real browser (Debian's Chromium, Playwright, phone width) against
the real app, Postgres, Temporal, the deployment worker and a real Caddy: the member who
requested it cannot approve it (told why, and a forged request is refused), a second member
approves it with a reason, the page follows it until it is live and its URL serves the new
version; a rollback (itself protected) is approved by the other member and the earlier version
is live again. Screenshots of each page are kept in artifacts/console/."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from db.models.deployments import Deployment
from forgeline.settings import DEPLOYMENTS_TASK_QUEUE, Settings
from tests.console.browser import GUARD_MS, SCREENSHOTS, chromium, phone_page, serve, shot, sign_in
from tests.deployments.helpers import (
    make_activities,
    make_environment,
    org_sources,
    protect,
    running_worker,
    start_deployment,
    stop,
    wait_status,
)
from tests.deployments.images import write_context
from tests.deployments.proxy import CaddyProcess
from tests.factories import make_org
from workflows.deployment_models import DeploymentSource


@pytest.fixture
def caddy(tmp_path: Path) -> Iterator[CaddyProcess]:
    proc = CaddyProcess(tmp_path / "caddy")
    proc.start()
    yield proc
    proc.stop()


def site(root: Path, version: str) -> DeploymentSource:
    context = write_context(root / version, None, f"site {version}")
    return DeploymentSource(version=version, context_dir=str(context), output_dir="www")


async def _live_version(page: Page, environment: str, version: str) -> None:
    """Wait (the page follows deployments in progress) until `version` is live."""
    live = page.locator(f'tr[data-environment="{environment}"] td').nth(1)
    await expect(live).to_have_text(version, timeout=GUARD_MS)


async def _deployment_ids(
    session_maker: async_sessionmaker[AsyncSession], environment_id: uuid.UUID
) -> list[uuid.UUID]:
    async with session_maker() as session:
        rows = await session.scalars(
            select(Deployment.id)
            .where(Deployment.environment_id == environment_id)
            .order_by(Deployment.created_at)
        )
        return list(rows.all())


async def test_approve_as_a_second_member_see_it_live_and_roll_back(
    app: Any,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    temporal_client: Client,
    caddy: CaddyProcess,
) -> None:
    org = await make_org(session_maker, role="admin")  # the admin requests; the owner approves
    owner_email = org.email.replace("admin-", "owner-", 1)
    worker_settings = settings.model_copy(
        update={"proxy_admin_url": caddy.admin_url, "proxy_http_port": caddy.http_port}
    )
    activities = make_activities(worker_settings, session_maker, temporal_client, None)
    project_id, env_id = await make_environment(
        session_maker, org.org_id, provider="static", env_type="production"
    )
    sources = org_sources(settings, org.org_id)
    csp: list[str] = []
    shots: list[str] = []
    async with running_worker(temporal_client, DEPLOYMENTS_TASK_QUEUE, activities):
        try:
            first = await start_deployment(
                session_maker, temporal_client, org.org_id, env_id, site(sources, "v1"),
                task_queue=DEPLOYMENTS_TASK_QUEUE, user_id=org.user_id,
            )  # fmt: skip
            await wait_status(session_maker, first, ("active",))
            await protect(session_maker, env_id, 1)
            second = await start_deployment(
                session_maker, temporal_client, org.org_id, env_id, site(sources, "v2"),
                task_queue=DEPLOYMENTS_TASK_QUEUE, user_id=org.user_id,
            )  # fmt: skip
            await wait_status(session_maker, second, ("awaiting_approval",))
            await _browse(app, org, owner_email, project_id, env_id, session_maker, csp, shots)
        finally:
            for deployment in await _deployment_ids(session_maker, env_id):
                await stop(temporal_client, deployment)
    assert csp == []
    print("screenshots:", " ".join(shots))


async def _browse(
    app: Any,
    org: Any,
    owner_email: str,
    project_id: uuid.UUID,
    env_id: uuid.UUID,
    session_maker: async_sessionmaker[AsyncSession],
    csp: list[str],
    shots: list[str],
) -> None:
    async with serve(app) as base, chromium() as browser:
        url = f"{base}/projects/{project_id}/deployments"
        requester = await phone_page(browser, csp)
        await sign_in(requester, base, org)
        await requester.goto(url)
        told = requester.get_by_text("You requested this deployment; another member has to approve")
        await told.wait_for()
        assert await requester.get_by_role("button", name="Approve").count() == 0
        shots.append(await shot(requester, "deployments-requester"))
        ids = await _deployment_ids(session_maker, env_id)
        token = await requester.locator('input[name="csrf"]').first.input_value()
        forged = await requester.request.post(
            f"{base}/deployments/{ids[-1]}/approve", form={"csrf": token, "reason": "mine"}
        )
        assert forged.status == 403  # the requester cannot approve, however they ask

        approver = await phone_page(browser, csp)
        await sign_in(approver, base, org, email=owner_email)
        await approver.goto(url)
        await approver.get_by_label("Reason").fill("Checked the <b>release notes</b>")
        # The page follows the waiting deployment; a reason being typed survives its refresh.
        await approver.evaluate(
            "new Promise(r => document.body.addEventListener('htmx:afterSwap', r, {once: true}))"
        )
        assert await approver.get_by_label("Reason").input_value() == (
            "Checked the <b>release notes</b>"
        )
        shots.append(await shot(approver, "deployments-approver"))
        await approver.get_by_role("button", name="Approve").click()
        env_name = await approver.locator("tr[data-environment]").first.get_attribute(
            "data-environment"
        )
        assert env_name
        await _live_version(approver, env_name, "v2")
        await approver.get_by_text("Approved: Checked the <b>release notes</b>").wait_for()
        shots.append(await shot(approver, "deployments-live"))
        live_link = approver.locator(f'tr[data-environment="{env_name}"] td a').first
        site_url = await live_link.get_attribute("href")
        assert site_url and site_url.startswith("http://")
        await approver.goto(site_url)
        await approver.get_by_role("heading", name="site v2").wait_for()
        await approver.screenshot(path=str(SCREENSHOTS / "site-live.png"))
        shots.append("site-live.png")

        # Roll back: the rollback is a deployment of the protected environment too; the member
        # who asked for it (the owner) cannot approve it, the admin can.
        await approver.goto(url)
        await approver.get_by_role("button", name=f"Roll back {env_name}").click()
        await approver.get_by_text("You requested this deployment").wait_for()
        await requester.goto(url)
        await requester.get_by_label("Reason").fill("Back to v1")
        await requester.get_by_role("button", name="Approve").click()
        await _live_version(requester, env_name, "v1")
        shots.append(await shot(requester, "deployments-rolled-back"))
        await requester.goto(site_url)
        await requester.get_by_role("heading", name="site v1").wait_for()
