"""The web console over HTTP with the real app: sign-in, CSRF, tenancy, hostile input, escaping."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.console.auth import SESSION_COOKIE
from tests.console.helpers import csrf_of, make_run, sign_in
from tests.factories import make_org


async def test_sign_in_sets_a_strict_session_cookie_and_pages_carry_a_strict_csp(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    first = await api_client.get("/", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/login"
    answer = await sign_in(api_client, org)
    assert answer.status_code == 303 and answer.headers["location"] == "/projects"
    cookie = answer.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=fls_" in cookie
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    page = await api_client.get("/projects")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page.text  # no inline script anywhere
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<main id="main">' in page.text and 'aria-label="Main"' in page.text
    assert (await api_client.get("/static/htmx.min.js")).status_code == 200


async def test_wrong_password_and_missing_csrf_are_refused(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    wrong = await sign_in(api_client, org, password="not it")
    assert wrong.status_code == 401 and "Invalid email or password" in wrong.text
    assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
    no_token = await api_client.post("/login", data={"email": org.email, "password": org.password})
    assert no_token.status_code == 403
    forged = await api_client.post(
        "/login", data={"csrf": "a" * 32, "email": org.email, "password": org.password}
    )
    assert forged.status_code == 403
    await sign_in(api_client, org)
    page = await api_client.get("/projects")
    logout_without = await api_client.post("/logout", data={"csrf": "nope"})
    assert logout_without.status_code == 403
    assert (await api_client.get("/projects")).status_code == 200  # still signed in
    out = await api_client.post("/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303
    assert (await api_client.get("/projects")).headers["location"] == "/login"


async def test_a_stolen_api_key_in_the_cookie_is_not_a_console_session(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    api_client.cookies.set(SESSION_COOKIE, org.api_key)
    assert (await api_client.get("/projects")).status_code == 303
    api_client.cookies.set(SESSION_COOKIE, "fls_" + "x" * 5000)
    assert (await api_client.get("/projects")).status_code == 303


async def test_project_and_run_pages_escape_hostile_names_and_log_lines(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(
        session_maker,
        org,
        project_name='<script>alert("p")</script>',
        log_tail="\x1b[31mred <img src=x onerror=alert(1)>\x1b[0m plain\n\x1b]0;pwned\x07ok\n",
    )
    await sign_in(api_client, org)
    listing = await api_client.get("/projects")
    assert "&lt;script&gt;alert(" in listing.text and '<script>alert("p")' not in listing.text
    project = await api_client.get(f"/projects/{rows.project_id}")
    assert project.status_code == 200 and "<script>alert" not in project.text
    assert f"/runs/{rows.run_id}" in project.text
    run = await api_client.get(f"/runs/{rows.run_id}")
    assert run.status_code == 200
    assert '<span class="ansi-fg31">red &lt;img src=x onerror=alert(1)&gt;</span> plain' in run.text
    assert "<img" not in run.text and "\x1b" not in run.text and "pwned" not in run.text
    assert "1.5 s" in run.text and "Re-run from failed" in run.text


async def test_another_tenants_objects_and_hostile_ids_are_404(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    mine, theirs = await make_org(session_maker), await make_org(session_maker)
    other = await make_run(session_maker, theirs)
    await sign_in(api_client, mine)
    page = await api_client.get("/projects")
    token = csrf_of(page.text)
    for path in (f"/runs/{other.run_id}", f"/projects/{other.project_id}",
                 f"/runs/{other.run_id}/stages/build/stream"):  # fmt: skip
        answer = await api_client.get(path)
        assert answer.status_code == 404, path
    for hostile in ("not-a-uuid", "..%2F..%2Fetc", "%3Cscript%3E", "1" * 500, "' OR 1=1 --"):
        for path in (f"/runs/{hostile}", f"/projects/{hostile}"):
            answer = await api_client.get(path)
            assert answer.status_code == 404, path
            assert "<script>" not in answer.text
    refused = await api_client.post(f"/runs/{other.run_id}/rerun", data={"csrf": token})
    assert refused.status_code == 404
    refused = await api_client.post(f"/runs/{other.run_id}/cancel", data={"csrf": token})
    assert refused.status_code == 404


async def test_rerun_needs_the_csrf_token_and_concurrent_reruns_make_distinct_runs(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(session_maker, org)
    await sign_in(api_client, org)
    page = await api_client.get(f"/runs/{rows.run_id}")
    without = await api_client.post(f"/runs/{rows.run_id}/rerun", data={"from": "failed"})
    assert without.status_code == 403
    token = csrf_of(page.text)
    answers = await asyncio.gather(
        *(api_client.post(f"/runs/{rows.run_id}/rerun", data={"csrf": token, "from": "failed"})
          for _ in range(2))
    )  # fmt: skip
    # The app reaches the test Temporal server: both re-runs are started, as two distinct runs.
    assert [a.status_code for a in answers] == [303, 303], [a.text for a in answers]
    locations = {a.headers["location"] for a in answers}
    assert len(locations) == 2 and f"/runs/{rows.run_id}" not in locations
    for location in locations:
        page = await api_client.get(location)
        assert page.status_code == 200 and "Run #" in page.text


async def test_log_stream_of_a_finished_stage_ends(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(session_maker, org, log_tail="one\ntwo\n")
    await sign_in(api_client, org)
    answer = await api_client.get(f"/runs/{rows.run_id}/stages/build/stream")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert "event: end" in answer.text
    unknown = await api_client.get(f"/runs/{rows.run_id}/stages/nope/stream")
    assert unknown.status_code == 404
