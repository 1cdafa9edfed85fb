"""A document's services and matrix reach the GitHub Actions and GitLab exports of the stored
pipeline; a generated stage's services, matrix and cache key files map onto the runtime the
runner reads."""

from __future__ import annotations

import pytest
import yaml

from forgeline.stage_runtime import proposal_runtime
from tests.agent.support import make_project
from tests.factories import make_org
from tests.pipelines.support import CANONICAL, create, headers

pytestmark = pytest.mark.timeout(120)

RUNTIME = """\
  services:
  - name: postgres
    image: postgres:16
  matrix:
    axes:
      NODE_VERSION:
      - '18'
      - '20'
"""


async def test_exports_carry_services_and_matrix(api_client, session_maker):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    document = CANONICAL.replace(
        "  environment:\n    CI_SHARD: '1'\n", "  environment:\n    CI_SHARD: '1'\n" + RUNTIME
    ).replace("- name: test\n  type: test\n", "- name: test\n  type: test\n  image: node:20\n")
    pipeline_id = await create(api_client, org, project_id, document)
    gha = await api_client.get(
        f"/v1/pipelines/{pipeline_id}/export",
        params={"format": "github-actions"},
        headers=headers(org),
    )
    assert gha.status_code == 200, gha.text
    jobs = yaml.safe_load(gha.text)["jobs"]
    assert jobs["test"]["strategy"]["matrix"] == {"NODE_VERSION": ["18", "20"]}
    assert "postgres" in jobs["test"]["services"]
    gitlab = await api_client.get(
        f"/v1/pipelines/{pipeline_id}/export", params={"format": "gitlab-ci"}, headers=headers(org)
    )
    assert gitlab.status_code == 200, gitlab.text
    assert "postgres:16" in gitlab.text


def test_generated_stage_runtime() -> None:
    runtime = proposal_runtime(
        ["postgres:16", "redis:7", "postgres:15"],
        {"PYTHON_VERSION": ["3.11", "3.12"]},
        ["poetry.lock"],
        {"POSTGRES_PASSWORD": "pw", "DATABASE_URL": "postgres://postgres:pw@postgres/db"},
    )
    assert runtime["services"] == [
        {
            "name": "postgres",
            "image": "postgres:16",
            "health_command": "pg_isready",
            "environment": {"POSTGRES_PASSWORD": "pw"},
        },
        {"name": "redis", "image": "redis:7", "health_command": "redis-cli ping"},
    ]
    assert runtime["matrix"] == {
        "axes": {"PYTHON_VERSION": ["3.11", "3.12"]},
        "fail_fast": False,
    }
    assert runtime["cache_key"] == {"prefix": "deps", "files": ["poetry.lock"]}
