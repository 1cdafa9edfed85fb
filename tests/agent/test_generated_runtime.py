"""A generated stage's services, matrix and cache key reach its stored row's `runtime`, the
form Forgeline's own runner starts services from, fans matrix legs out of and keys caches by
(the exports carry the same from the proposal)."""

from __future__ import annotations

from core.agent.generated_pipelines import stage_columns
from forgeline.pipeline_spec import ProposedStage


def test_services_matrix_and_cache_key_are_stored_for_the_runner() -> None:
    stage = ProposedStage(
        name="test",
        stage_type="test",
        commands=["pytest"],
        services=["postgres:16", "redis:7", "postgres:16"],
        env={"POSTGRES_PASSWORD": "pw", "DATABASE_URL": "postgresql://postgres@postgres/test"},
        matrix={"PYTHON_VERSION": ["3.11", "3.12"]},
        cache_key_files=["poetry.lock"],
    )
    runtime = stage_columns(stage)["runtime"]
    assert [s["name"] for s in runtime["services"]] == ["postgres", "redis"]
    assert all(s["health_command"] for s in runtime["services"])
    assert runtime["matrix"] == {"axes": {"PYTHON_VERSION": ["3.11", "3.12"]}, "fail_fast": False}
    assert runtime["cache_key"] == {"prefix": "deps", "files": ["poetry.lock"]}


def test_a_plain_stage_declares_nothing_for_the_runner() -> None:
    stage = ProposedStage(name="build", stage_type="build", commands=["make"])
    assert stage_columns(stage)["runtime"] == {}
