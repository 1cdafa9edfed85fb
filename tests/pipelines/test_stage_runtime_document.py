"""Services, matrix and cache key in the pipeline document: round trip through the API byte for
byte, GitHub Actions matrix semantics, and hostile documents refused with 422 and no write."""

from __future__ import annotations

from typing import Any

import pytest

from forgeline.stage_runtime import (
    MAX_MATRIX_LEGS,
    MatrixDocument,
    MatrixTooLarge,
    expand_matrix,
    leg_name,
)
from tests.agent.support import make_project
from tests.factories import make_org
from tests.pipelines.support import ACCEPT_YAML, CANONICAL, YAML, create, headers

pytestmark = pytest.mark.timeout(120)

RUNTIME = """\
  services:
  - name: db
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: test
    health_command: pg_isready
  matrix:
    axes:
      NODE:
      - '18'
      - '20'
    include:
    - NODE: '22'
    fail_fast: false
  cache_key:
    prefix: npm
    files:
    - package-lock.json
    restore_keys:
    - npm-
"""


def _with_runtime(text: str) -> str:
    return text.replace(
        "  environment:\n    CI_SHARD: '1'\n", "  environment:\n    CI_SHARD: '1'\n" + RUNTIME
    )


def test_matrix_product_exclude_and_include() -> None:
    matrix = MatrixDocument.model_validate(
        {
            "axes": {"PY": ["3.11", "3.12"], "OS": ["linux", "mac"]},
            "exclude": [{"PY": "3.11", "OS": "mac"}],
            "include": [{"PY": "3.12", "EXTRA": "yes"}, {"PY": "3.13", "OS": "linux"}],
        }
    )
    legs = expand_matrix(matrix)
    assert legs == [
        {"PY": "3.11", "OS": "linux"},
        {"PY": "3.12", "OS": "linux", "EXTRA": "yes"},
        {"PY": "3.12", "OS": "mac", "EXTRA": "yes"},
        {"PY": "3.13", "OS": "linux"},
    ]
    assert leg_name("test", legs[0]) == "test (3.11, linux)"


def test_matrix_past_the_limit_is_refused_before_it_is_built() -> None:
    huge = MatrixDocument.model_validate(
        {"axes": {f"A{i}": [str(v) for v in range(10)] for i in range(8)}}  # 10^8
    )
    with pytest.raises(MatrixTooLarge, match="100000000 combinations"):
        expand_matrix(huge)
    over = MatrixDocument.model_validate(
        {"axes": {"A": [str(v) for v in range(MAX_MATRIX_LEGS)], "B": ["x", "y"]}}
    )
    with pytest.raises(MatrixTooLarge, match="512 combinations"):
        expand_matrix(over)


async def test_runtime_round_trips_byte_for_byte(api_client, session_maker):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    document = _with_runtime(CANONICAL)
    pipeline_id = await create(api_client, org, project_id, document)
    got = await api_client.get(f"/v1/pipelines/{pipeline_id}", headers=headers(org, **ACCEPT_YAML))
    assert got.status_code == 200
    assert got.text == document


@pytest.mark.parametrize(
    ("runtime", "path", "message"),
    [
        (
            "  matrix:\n    axes:\n      A: ["
            + ", ".join(f"'{i}'" for i in range(100))
            + "]\n      B: ["
            + ", ".join(f"'{i}'" for i in range(100))
            + "]\n",
            "/stages/1/matrix",
            "10000 combinations",
        ),
        (
            "  services:\n  - {name: db, image: a}\n  - {name: db, image: b}\n",
            "/stages/1/services",
            "duplicate service name",
        ),
        ("  services:\n  - {name: DB_1, image: a}\n", "/stages/1/services/0/name", ""),
        (
            "  cache_key:\n    files:\n    - ../../etc/passwd\n",
            "/stages/1/cache_key/files",
            "inside the repository",
        ),
        ("  matrix:\n    axes:\n      A: ['$(id)']\n", "/stages/1/matrix/axes/A/0", ""),
    ],
)
async def test_hostile_runtime_is_422_and_writes_nothing(
    api_client, session_maker, runtime, path, message
):
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    pipeline_id = await create(api_client, org, project_id)
    hostile = CANONICAL.replace(
        "  environment:\n    CI_SHARD: '1'\n", "  environment:\n    CI_SHARD: '1'\n" + runtime
    )
    resp = await api_client.put(
        f"/v1/pipelines/{pipeline_id}", content=hostile, headers=headers(org, **YAML)
    )
    assert resp.status_code == 422, resp.text
    errors = resp.json()["errors"]
    hit = [e for e in errors if e["path"] == path]
    assert hit, errors
    assert message in hit[0]["message"]
    detail = (await api_client.get(f"/v1/pipelines/{pipeline_id}", headers=org.headers)).json()
    assert detail["version"] == 1


def test_repository_file_stages_fan_out_and_cache_per_pipeline() -> None:
    from core.pipelines.document import parse_yaml
    from core.pipelines.pipeline_file import _specs

    document = parse_yaml(
        "name: ci\nstages:\n"
        "- name: test\n  commands: [pytest]\n  cache: [.venv]\n"
        "  matrix:\n    axes:\n      PY: ['3.11', '3.12']\n"
        "- name: report\n  commands: [echo]\n  depends_on: [test]\n"
    )
    pipeline: dict[str, Any] = {
        "retry_policy": {},
        "config": {},
        "root_directory": None,
        "id": "p-1",
    }
    specs = {s.name: s for s in _specs(document, pipeline)}
    assert sorted(specs) == ["report", "test (3.11)", "test (3.12)"]
    assert specs["report"].depends_on == ["test (3.11)", "test (3.12)"]
    leg = specs["test (3.12)"]
    assert leg.environment["PY"] == "3.12" and leg.matrix_leg is not None
    assert leg.cache is not None and leg.cache.scope == "p-1" and leg.cache.prefix == "test"
    # Without the pipeline's ID there is no cache at all (never one shared across pipelines).
    unscoped = _specs(document, {**pipeline, "id": None})
    assert all(s.cache is None for s in unscoped)
