"""Shared pieces of the console's browser tests: the app on a loopback port, Debian's Chromium
driven by Playwright at phone width, screenshots kept as test artifacts, sign-in, and checks of
labels, keyboard focus, contrast and width on every page shot."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from playwright.async_api import Browser, Page, ViewportSize, async_playwright

from tests.factories import OrgFixture

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ENSURE_CHROMIUM = ROOT / "scripts" / "ensure-chromium.sh"
# Screenshots of every page the browser tests visit (gitignored).
SCREENSHOTS = ROOT / "artifacts" / "console"
PHONE = ViewportSize(width=390, height=844)
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
GUARD_MS = 90_000

# Labels, focus, contrast (WCAG AA 4.5:1 for text) and no sideways scrolling at phone width.
_AUDIT_JS = "\n".join(
    line
    for line in (Path(__file__).parent / "audit.js").read_text().splitlines()
    if not line.startswith("//")
)


def _with_state(app: Any, state: MutableMapping[str, Any]) -> Any:
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": {**state, **scope.get("state", {})}}
        await app(scope, receive, send)

    return asgi


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """The app served over real HTTP on a loopback port of its own."""
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
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(ENSURE_CHROMIUM)], check=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def phone_page(browser: Browser, csp_reports: list[str]) -> Page:
    """A fresh browser context (its own cookies) at phone width."""
    context = await browser.new_context(viewport=PHONE)
    page = await context.new_page()
    page.set_default_timeout(GUARD_MS)
    page.on(
        "console",
        lambda message: (
            csp_reports.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return page


async def sign_in(page: Page, base: str, who: OrgFixture, email: str | None = None) -> None:
    await page.goto(f"{base}/login")
    await page.get_by_label("Email").fill(email or who.email)
    await page.get_by_label("Password").fill(who.password)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Projects").wait_for()


async def shot(page: Page, name: str) -> str:
    """A full-page screenshot (artifacts/console/<name>.png) after the page passed the audit."""
    problems = await page.evaluate(_AUDIT_JS)
    assert problems == [], f"{name}: {problems}"
    # Keyboard: the skip link comes first, shows its focus, and Tab goes on into the header.
    await page.focus("a.skip")
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), f"{name}: no visible focus on the skip link"
    await page.keyboard.press("Tab")
    inside = await page.evaluate("!!document.activeElement.closest('header')")
    assert inside, f"{name}: Tab from the skip link should reach the header's links"
    await page.evaluate("document.activeElement.blur()")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0
    return path.name
