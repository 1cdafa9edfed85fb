"""The console in a real browser (Debian's Chromium driven by Playwright): sign in, open a run,
and watch a log line written after the page loaded arrive, coloured, with markup shown as text.
No Content-Security-Policy violation is reported along the way."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import async_playwright
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.session import session_scope
from tests.console.helpers import log_chunk, make_run, stage_execution_id
from tests.factories import make_org

CHROMIUM = Path("/usr/bin/chromium")
ENSURE_CHROMIUM = Path(__file__).resolve().parents[2] / "scripts" / "ensure-chromium.sh"
# Chromium on a machine without outside network: no background connections at all.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Only guards against a hung test, never a measure of speed.
GUARD_MS = 60_000


def _with_state(app: Any, state: MutableMapping[str, Any]) -> Any:
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": {**state, **scope.get("state", {})}}
        await app(scope, receive, send)

    return asgi


@pytest.fixture
async def console_url(app: Any) -> AsyncIterator[str]:
    """The app served over real HTTP on a loopback port of its own."""
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(ENSURE_CHROMIUM)], check=True)
    state = getattr(app.state, "forgeline_lifespan_state", {})
    config = uvicorn.Config(
        _with_state(app, state), host="127.0.0.1", port=0, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(GUARD_MS / 1000):
        while not server.started:
            await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_sign_in_and_watch_a_log_line_arrive_live(
    console_url: str, session_maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(
        session_maker, org, project_name="Browser project", status="running", log_tail=""
    )
    execution = await stage_execution_id(session_maker, rows.run_id)
    csp_reports: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            page.set_default_timeout(GUARD_MS)
            page.on(
                "console",
                lambda message: (
                    csp_reports.append(message.text)
                    if "Content Security Policy" in message.text
                    else None
                ),
            )
            await page.goto(f"{console_url}/")
            await page.get_by_label("Email").fill(org.email)
            await page.get_by_label("Password").fill(org.password)
            await page.get_by_role("button", name="Sign in").click()
            await page.get_by_role("link", name="Browser project").wait_for()
            await page.screenshot(path=str(tmp_path / "projects.png"), full_page=True)

            await page.goto(f"{console_url}/runs/{rows.run_id}")
            log = page.locator("pre.log")
            await log.wait_for()
            async with session_scope(session_maker) as session:
                session.add(
                    log_chunk(execution, 0, 0, "\x1b[32mcompiled <b>ok</b>\x1b[0m\nsecret: ***")
                )
            green = log.locator("span.ansi-fg32")
            await green.wait_for()
            assert await green.text_content() == "compiled <b>ok</b>"
            assert await log.locator("b").count() == 0
            await page.get_by_text("secret: ***").wait_for()
            await page.screenshot(path=str(tmp_path / "run.png"), full_page=True)
        finally:
            await browser.close()
    assert csp_reports == []
    assert (tmp_path / "run.png").stat().st_size > 0
