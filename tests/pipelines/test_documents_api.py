"""Pipelines as documents over the API: YAML/JSON create and replace, round-trip exact GET,
schema errors with their paths, hostile YAML refused without a write, the published schema."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from core.pipelines.document import json_schema
from tests.agent.support import make_project
from tests.factories import make_org
from tests.pipelines.support import ACCEPT_YAML, CANONICAL, YAML, create, headers

pytestmark = pytest.mark.timeout(120)
DOCS_SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "pipeline.schema.json"


async def _version(api_client, org, pipeline_id: uuid.UUID) -> int:
    resp = await api_client.get(f"/v1/pipelines/{pipeline_id}", headers=org.headers)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["version"])


async def test_put_then_get_gives_identical_bytes(api_client, session_maker):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    pipeline_id = await create(api_client, org, project_id)

    got = await api_client.get(f"/v1/pipelines/{pipeline_id}", headers=headers(org, **ACCEPT_YAML))
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("application/yaml")
    assert got.content == CANONICAL.encode()
    assert got.headers["ETag"] == '"1"'

    edited = CANONICAL.replace("timeout_seconds: 900", "timeout_seconds: 1200")
    put = await api_client.put(
        f"/v1/pipelines/{pipeline_id}", content=edited, headers=headers(org, **YAML)
    )
    assert put.status_code == 200, put.text
    assert put.content == edited.encode() and put.headers["ETag"] == '"2"'
    again = await api_client.get(
        f"/v1/pipelines/{pipeline_id}", headers=headers(org, **ACCEPT_YAML)
    )
    assert again.content == edited.encode()

    # The same document again changes nothing: no version of nothing.
    same = await api_client.put(
        f"/v1/pipelines/{pipeline_id}", content=edited, headers=headers(org, **YAML)
    )
    assert same.status_code == 200 and same.headers["ETag"] == '"2"'

    # The stored stages are what the document says (the run plan reads these rows).
    detail = (await api_client.get(f"/v1/pipelines/{pipeline_id}", headers=org.headers)).json()
    test_stage = next(s for s in detail["stages"] if s["name"] == "test")
    assert test_stage["timeout_seconds"] == 1200 and test_stage["depends_on"] == ["install"]
    assert detail["triggers"]["on_push"]["branches"] == ["main"]


async def test_json_body_and_non_canonical_yaml_are_normalized(api_client, session_maker):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    doc = yaml.safe_load(CANONICAL)
    resp = await api_client.post(
        f"/v1/projects/{project_id}/pipelines", json=doc, headers=org.headers
    )
    assert resp.status_code == 201, resp.text
    assert resp.content == CANONICAL.encode()
    # Flow style, defaults spelled out, other key order: stored as the canonical form.
    loose = json.dumps({**doc, "stages": doc["stages"], "type": "full_cicd", "name": "loose"})
    created = await api_client.post(
        f"/v1/projects/{project_id}/pipelines", content=loose, headers=headers(org, **YAML)
    )
    assert created.status_code == 201, created.text
    assert created.text == CANONICAL.replace("name: web\n", "name: loose\n")


@pytest.mark.parametrize(
    ("document", "path"),
    [
        (
            CANONICAL.replace("timeout_seconds: 900", "timeout_seconds: ten"),
            "/stages/1/timeout_seconds",
        ),
        (CANONICAL.replace("retries: 2", "retries: '2'"), "/stages/1/retries"),
        (CANONICAL.replace("  - npm ci\n", "  - [npm, ci]\n"), "/stages/0/commands/0"),
        (CANONICAL.replace("type: test", "type: smoke"), "/stages/1/type"),
        (CANONICAL + "colour: blue\n", "/colour"),
        (CANONICAL.replace("- install\n  timeout", "- lint\n  timeout"), "/stages/1/depends_on/0"),
        (CANONICAL.replace("- name: test", "- name: install"), "/stages/1/name"),
        (CANONICAL.replace("- coverage/lcov.info", "- ../secrets"), "/stages/1/artifacts"),
        (CANONICAL.replace("name: web\n", "name: ''\n"), "/name"),
        ("- just\n- a list\n", "/"),
    ],
)
async def test_schema_errors_are_422_with_paths(api_client, session_maker, document, path):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    pipeline_id = await create(api_client, org, project_id)
    resp = await api_client.put(
        f"/v1/pipelines/{pipeline_id}", content=document, headers=headers(org, **YAML)
    )
    assert resp.status_code == 422, resp.text
    problem = resp.json()
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert path in [e["path"] for e in problem["errors"]], problem
    assert await _version(api_client, org, pipeline_id) == 1


async def test_dependency_cycle_is_refused(api_client, session_maker):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    cyclic = CANONICAL.replace("  cache:\n  - node_modules\n", "  depends_on:\n  - test\n")
    resp = await api_client.post(
        f"/v1/projects/{project_id}/pipelines", content=cyclic, headers=headers(org, **YAML)
    )
    assert resp.status_code == 422
    assert "cycle" in resp.json()["errors"][0]["message"]


def _alias_bomb() -> str:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\nname: bomb\nstages: *i\n"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (_alias_bomb(), 422, "anchors and aliases"),
        ("name: deep\nstages: " + "[" * 5000 + "]" * 5000 + "\n", 422, "nests deeper"),
        ("name: x\nstages: [\n", 422, "does not parse"),
        ("name: big\n# " + "x" * (5 * 1024 * 1024) + "\n", 413, ""),
    ],
    ids=["alias-bomb", "deep-nesting", "broken", "5mb"],
)
async def test_hostile_yaml_is_refused_and_writes_nothing(
    api_client, session_maker, body, status, needle
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    pipeline_id = await create(api_client, org, project_id)
    resp = await api_client.put(
        f"/v1/pipelines/{pipeline_id}", content=body, headers=headers(org, **YAML)
    )
    assert resp.status_code == status, resp.text[:500]
    assert needle in resp.text
    assert await _version(api_client, org, pipeline_id) == 1
    bad_utf8 = await api_client.put(
        f"/v1/pipelines/{pipeline_id}", content=b"name: \xff\xfe\n", headers=headers(org, **YAML)
    )
    assert bad_utf8.status_code == 422


async def test_another_tenants_pipeline_is_404(api_client, session_maker):
    owner = await make_org(session_maker)
    other = await make_org(session_maker)
    project_id = await make_project(session_maker, owner.org_id, None)
    pipeline_id = await create(api_client, owner, project_id)
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/v1/pipelines/{pipeline_id}", {"headers": headers(other, **ACCEPT_YAML)}),
        (
            "PUT",
            f"/v1/pipelines/{pipeline_id}",
            {"content": CANONICAL, "headers": headers(other, **YAML)},
        ),
        ("GET", f"/v1/pipelines/{pipeline_id}/versions", {"headers": other.headers}),
        ("GET", f"/v1/pipelines/{pipeline_id}/versions/1", {"headers": other.headers}),
        ("GET", f"/v1/pipelines/{pipeline_id}/diff?from=1&to=1", {"headers": other.headers}),
        ("DELETE", f"/v1/pipelines/{pipeline_id}", {"headers": other.headers}),
        (
            "POST",
            f"/v1/projects/{project_id}/pipelines",
            {"content": CANONICAL, "headers": headers(other, **YAML)},
        ),
    ]
    for method, url, kw in requests:
        resp = await api_client.request(method, url, **kw)
        assert resp.status_code == 404, (method, url, resp.text)
    assert await _version(api_client, owner, pipeline_id) == 1


async def test_published_schema_matches_docs_copy_and_validates_documents(api_client):
    resp = await api_client.get("/v1/schemas/pipeline.json")
    assert resp.status_code == 200
    published = resp.json()
    assert published == json_schema()
    assert json.loads(DOCS_SCHEMA.read_text()) == published, (
        "docs/pipeline.schema.json is stale: regenerate it with "
        "`uv run python -m core.pipelines.document > docs/pipeline.schema.json`"
    )
    validator = jsonschema.Draft202012Validator(published)
    assert not list(validator.iter_errors(yaml.safe_load(CANONICAL)))
    wrong = yaml.safe_load(CANONICAL.replace("retries: 2", "retries: -1"))
    assert list(validator.iter_errors(wrong))
