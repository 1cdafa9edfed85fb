"""A static site's headers, rewrites and redirects, enforced by a real Caddy: the order Vercel and
Netlify users expect (redirects, then headers, then rewrites of paths that are not files), the
captures of a source used in its destination, and hostile rules (placeholders that would read the
proxy's environment, a broken pattern) that neither leak nor break the site."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest

from infra.proxy_routes import CaddyRoutes, Route
from infra.site_rules import (
    HeaderRule,
    InvalidSiteRule,
    Redirect,
    Rewrite,
    SiteRules,
    site_rules_from_config,
    source_regex,
)
from tests.deployments.proxy import CaddyProcess


def _site(root: Path) -> Path:
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text("home page")
    (root / "app.html").write_text("single page app")
    (root / "docs" / "index.html").write_text("docs index")
    (root / "robots.txt").write_text("robots")
    return root


RULES = SiteRules(
    headers=(
        HeaderRule("/docs/:page*", (("X-Docs", "yes"), ("Cache-Control", "max-age=60"))),
        HeaderRule(
            "/(.*)", (("X-Frame-Options", "DENY"), ("X-Leak", "{env.HOME}-{system.hostname}"))
        ),
    ),
    rewrites=(
        Rewrite("/app/:rest*", "/app.html"),
        Rewrite("/(.*)", "/index.html"),
    ),
    redirects=(
        Redirect("/old-blog/:slug", "/blog/:slug", 301),
        Redirect("/go/(.*)", "https://example.test/target/$1", 307),
        Redirect("/braces", "/x?q={env.HOME}", 302),
    ),
)


@pytest.fixture
async def site_host(caddy: CaddyProcess, tmp_path: Path) -> str:
    host = f"site-{uuid.uuid4().hex[:8]}.apps.test"
    root = _site(tmp_path / "site")
    routes = CaddyRoutes(caddy.admin_url, http_port=caddy.http_port)
    await routes.put(
        Route(id=f"fl-test-{host}", hosts=[host], upstream="", root=str(root), rules=RULES)
    )
    return host


async def _get(caddy: CaddyProcess, host: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(follow_redirects=False) as http:
        return await http.get(f"http://127.0.0.1:{caddy.http_port}{path}", headers={"Host": host})


async def test_redirects_capture_and_come_first(caddy: CaddyProcess, site_host: str) -> None:
    moved = await _get(caddy, site_host, "/old-blog/hello-world")
    assert moved.status_code == 301
    assert moved.headers["location"] == "/blog/hello-world"
    away = await _get(caddy, site_host, "/go/a/b")
    assert away.status_code == 307
    assert away.headers["location"] == "https://example.test/target/a/b"


async def test_files_win_over_rewrites_and_the_first_rewrite_applies(
    caddy: CaddyProcess, site_host: str
) -> None:
    assert (await _get(caddy, site_host, "/robots.txt")).text == "robots"
    assert (await _get(caddy, site_host, "/docs/")).text == "docs index"
    spa = await _get(caddy, site_host, "/app/settings/profile")
    assert spa.status_code == 200 and spa.text == "single page app"
    fallback = await _get(caddy, site_host, "/some/client/route")
    assert fallback.status_code == 200 and fallback.text == "home page"


async def test_headers_apply_by_path_beside_the_site_defaults(
    caddy: CaddyProcess, site_host: str
) -> None:
    docs = await _get(caddy, site_host, "/docs/")
    assert docs.headers["x-docs"] == "yes"
    assert docs.headers["cache-control"] == "max-age=60"
    assert docs.headers["x-frame-options"] == "DENY"
    assert docs.headers["x-content-type-options"] == "nosniff"
    home = await _get(caddy, site_host, "/")
    assert "x-docs" not in home.headers and home.headers["x-frame-options"] == "DENY"


async def test_placeholders_in_rules_stay_literal(caddy: CaddyProcess, site_host: str) -> None:
    """`{env.HOME}` in a header or a destination must not become the proxy's environment."""
    home = await _get(caddy, site_host, "/")
    assert home.headers["x-leak"] == "{env.HOME}-{system.hostname}"
    braces = await _get(caddy, site_host, "/braces")
    assert braces.status_code == 302
    assert braces.headers["location"] == "/x?q={env.HOME}"


async def test_a_site_without_rules_is_served_as_before(
    caddy: CaddyProcess, tmp_path: Path
) -> None:
    host = f"plain-{uuid.uuid4().hex[:8]}.apps.test"
    root = _site(tmp_path / "plain")
    routes = CaddyRoutes(caddy.admin_url, http_port=caddy.http_port)
    await routes.put(Route(id=f"fl-test-{host}", hosts=[host], upstream="", root=str(root)))
    assert (await _get(caddy, host, "/")).text == "home page"
    assert (await _get(caddy, host, "/nowhere")).status_code == 404
    fetched = await routes.get(f"fl-test-{host}")
    assert fetched is not None and fetched.root == str(root)


async def test_concurrent_rule_changes_leave_one_route(caddy: CaddyProcess, tmp_path: Path) -> None:
    host = f"race-{uuid.uuid4().hex[:8]}.apps.test"
    root = _site(tmp_path / "race")
    routes = CaddyRoutes(caddy.admin_url, http_port=caddy.http_port)
    variants = [SiteRules(redirects=(Redirect("/r", f"/to-{n}", 302),)) for n in range(8)]
    await asyncio.gather(
        *(
            routes.put(
                Route(id=f"fl-test-{host}", hosts=[host], upstream="", root=str(root), rules=v)
            )
            for v in variants
        )
    )
    matching = [r for r in await routes.routes("fl-test-") if host in r.hosts]
    assert len(matching) == 1
    location = (await _get(caddy, host, "/r")).headers["location"]
    assert location in {f"/to-{n}" for n in range(8)}


def test_patterns_translate_and_broken_ones_are_refused() -> None:
    assert source_regex("/blog/:slug") == r"^/blog/(?P<slug>[^/]+)$"
    assert source_regex("/a.b/*") == r"^/a\.b/.*$"
    with pytest.raises(InvalidSiteRule):
        source_regex("/(unclosed")
    with pytest.raises(InvalidSiteRule):
        source_regex("/([a-)")


def test_stored_config_with_bad_entries_keeps_the_good_ones() -> None:
    rules = site_rules_from_config(
        {
            "headers": [{"source": "/x", "headers": {"A": "1"}}, "junk", {"source": "no-slash"}],
            "rewrites": [{"source": "/a", "destination": "/b"}, {"source": "/c"}],
            "redirects": [
                {"source": "/r", "destination": "javascript:alert(1)"},
                {"source": "/s", "destination": "https://ok.test/", "status_code": 302},
                {"source": "/t", "destination": "/u", "status_code": 200},
            ],
        }
    )
    assert rules.headers == (HeaderRule("/x", (("A", "1"),)),)
    assert rules.rewrites == (Rewrite("/a", "/b"),)
    assert rules.redirects == (Redirect("/s", "https://ok.test/", 302),)
    assert not site_rules_from_config({})
