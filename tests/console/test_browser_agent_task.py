"""Generating a verified pipeline in a real browser (Debian's Chromium, Playwright, phone width)
against the real app, Postgres, Temporal, the offline planner and a sandboxed build worker: the
project's form starts the task, the task page follows it by itself to its verdict (the
repository's own failing test: not verified, with the stage, class and evidence) and links the
verification run. Both pages pass the audit and are kept as screenshots in artifacts/console/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from forgeline.settings import Settings
from tests.agent.support import make_project, verifying_workers
from tests.agent.verify_repos import FAILS, node_repo
from tests.console.browser import chromium, phone_page, serve, shot, sign_in
from tests.factories import make_org


async def test_generate_and_watch_the_verification_in_the_browser(
    app: Any,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    org = await make_org(session_maker)
    repo = node_repo(tmp_path / "repo", FAILS)
    project_id = await make_project(session_maker, org.org_id, str(repo), name="Generated")
    csp: list[str] = []
    async with (
        verifying_workers(temporal_client, settings, session_maker, tmp_path / "sandbox"),
        serve(app) as base,
        chromium() as browser,
    ):
        page = await phone_page(browser, csp)
        await sign_in(page, base, org)
        await page.goto(f"{base}/projects/{project_id}")
        await shot(page, "project-generate")
        assert await page.get_by_label("Verify by running it").is_checked()
        # Offline: no lint or audit stage that would reach a registry.
        await page.get_by_label("Include lint").uncheck()
        await page.get_by_label("Include a security scan").uncheck()
        await page.get_by_role("button", name="Generate pipeline").click()
        await page.get_by_role("heading", name="Pipeline generation").wait_for()
        task_url = page.url
        await page.evaluate("window.sameDocument = true")
        # The page follows the task by itself: phase, proposal, run, verdict.
        await page.get_by_role("heading", name="Verdict").wait_for()
        assert await page.evaluate("window.sameDocument") is True  # polled, not reloaded
        verdict = page.locator("#verdict")
        await verdict.get_by_text("Not verified").wait_for()
        assert await verdict.locator("dd").first.text_content() == "test"
        assert "arithmetic is broken" in (await verdict.locator("pre.log").text_content() or "")
        assert await page.get_by_role("heading", name="Proposed stages").count() == 1
        await shot(page, "agent-task")
        await page.get_by_role("link", name="Run #1 (live logs)").click()
        await (
            page.locator('li[data-stage="test"] pre.log')
            .get_by_text("arithmetic is broken")
            .first.wait_for()
        )
        await page.goto(task_url)
        await page.get_by_role("heading", name="Verdict").wait_for()
    assert csp == []
    assert (Path(__file__).resolve().parents[2] / "artifacts/console/agent-task.png").exists()
