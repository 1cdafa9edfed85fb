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
from playwright.async_api import Browser, Page, async_playwright

from tests.factories import OrgFixture

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ENSURE_CHROMIUM = ROOT / "scripts" / "ensure-chromium.sh"
# Screenshots of every page the browser tests visit (gitignored).
SCREENSHOTS = ROOT / "artifacts" / "console"
PHONE = {"width": 390, "height": 844}
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
_AUDIT_JS = """
() => {
  const problems = [];
  const first = document.querySelector('a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]');
  if (!first || !first.classList.contains('skip')) problems.push('the skip link is not the first stop');
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
    if (!el.labels || el.labels.length === 0) {
      if (!el.getAttribute('aria-label')) problems.push('unlabelled ' + el.outerHTML.slice(0, 80));
    }
  }
  for (const b of document.querySelectorAll('button')) {
    if (!b.textContent.trim() && !b.getAttribute('aria-label')) problems.push('nameless button');
  }
  const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const texts = document.querySelectorAll('main a, main p, main td, main th, main button, main label, main summary, main dd, main dt, main .status, nav a, nav button');
  for (const el of texts) {
    if (!el.offsetParent || !el.textContent.trim()) continue;
    const fg = lum(rgb(getComputedStyle(el).color).slice(0, 3));
    const bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    if (ratio < 4.5) problems.push('contrast ' + ratio.toFixed(2) + ' ' + el.outerHTML.slice(0, 80));
  }
  if (document.documentElement.scrollWidth > window.innerWidth + 1) {
    problems.push('page wider than the screen: ' + document.documentElement.scrollWidth);
  }
  return problems;
}
"""


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
