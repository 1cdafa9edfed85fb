"""Signing in with a TOTP code, switching organization and signing out, in a real browser
(Debian's Chromium, Playwright, phone width) against the real app and Postgres. Screenshots of
the sign-in pages are kept in artifacts/console/."""

from __future__ import annotations

from typing import Any

import pyotp
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.accounts import OrganizationMember, User
from db.session import session_scope
from forgeline.crypto import encrypt_str
from forgeline.settings import Settings
from tests.console.browser import chromium, phone_page, serve, shot
from tests.console.helpers import make_run
from tests.factories import make_org


async def test_totp_sign_in_organization_switch_and_sign_out(
    app: Any, settings: Settings, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    home, away = await make_org(session_maker), await make_org(session_maker)
    await make_run(session_maker, home, project_name="Home project")
    await make_run(session_maker, away, project_name="Away project")
    secret = pyotp.random_base32()
    async with session_scope(session_maker) as session:
        await session.execute(
            update(User)
            .where(User.id == home.user_id)
            .values(totp_enabled=True, totp_secret_encrypted=encrypt_str(secret, settings))
        )
        session.add(
            OrganizationMember(organization_id=away.org_id, user_id=home.user_id, role="viewer")
        )
    csp: list[str] = []
    shots: list[str] = []
    async with serve(app) as base, chromium() as browser:
        page = await phone_page(browser, csp)
        await page.goto(f"{base}/")
        await page.get_by_role("heading", name="Sign in").wait_for()
        shots.append(await shot(page, "sign-in"))
        await page.get_by_label("Email").fill(home.email)
        await page.get_by_label("Password").fill(home.password)
        await page.get_by_label("Organization slug (optional)").fill(home.slug)
        await page.get_by_role("button", name="Sign in").click()
        code = page.get_by_label("Authentication code")
        await code.wait_for()
        shots.append(await shot(page, "sign-in-totp"))
        await page.get_by_label("Password").fill(home.password)
        await code.fill("000000")
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("alert").wait_for()  # a wrong code is refused
        await page.get_by_label("Password").fill(home.password)
        await page.get_by_label("Authentication code").fill(pyotp.TOTP(secret).now())
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("link", name="Home project").wait_for()
        assert await page.get_by_role("link", name="Away project").count() == 0

        # The switcher lists the user's organizations with their role there.
        switcher = page.get_by_label("Organization")
        await switcher.select_option(away.slug)
        await page.get_by_role("button", name="Switch").click()
        await page.get_by_role("link", name="Away project").wait_for()
        assert await page.get_by_role("link", name="Home project").count() == 0
        assert "(viewer)" in (await switcher.locator("option:checked").text_content() or "")
        shots.append(await shot(page, "projects-switched"))

        await page.get_by_role("button", name="Sign out").click()
        await page.get_by_role("heading", name="Sign in").wait_for()
        await page.goto(f"{base}/projects")
        await page.get_by_role("heading", name="Sign in").wait_for()  # signed out for good
    assert csp == []
    print("screenshots:", " ".join(shots))
