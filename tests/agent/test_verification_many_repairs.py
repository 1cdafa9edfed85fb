"""One examination repairs every failed stage it has a rule for: lint and test run in parallel and
both fail because the repository ships its settings as .env.defaults only; both are repaired in
one new version, so the pipeline is verified on its second run instead of its third. A stage
whose failure no rule knows is left as it is and still reported."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select

from db.models.pipelines import PipelineStage
from tests.agent import test_verification
from tests.agent.test_verification import generate, stored
from tests.agent.verify_repos import FAILS, NEEDS_ENV, NPMRC, git_repo

# The agent worker and a sandbox pipeline worker, as the verification tests run them.
workers = test_verification.workers

pytestmark = pytest.mark.timeout(300)


def _repo(root, lint_js: str):  # type: ignore[no-untyped-def]
    package = {
        "name": "sample",
        "version": "1.0.0",
        "scripts": {"test": "node test.js", "lint": "node lint.js"},
    }
    return git_repo(
        root,
        {
            "package.json": json.dumps(package),
            ".npmrc": NPMRC,
            "test.js": NEEDS_ENV,
            "lint.js": lint_js,
            ".env.defaults": "GREETING=hello\n",
        },
    )


async def test_parallel_stages_failing_alike_are_repaired_in_one_version(
    temporal_client, session_maker, task_queue, workers, tmp_path, monkeypatch
):
    monkeypatch.setitem(test_verification.NO_SCAN, "include_lint", True)
    repo = _repo(tmp_path / "repo", NEEDS_ENV)
    _, out = await generate(temporal_client, session_maker, task_queue, workers, repo)
    verdict = out.output["verification"]
    assert verdict["verified"] is True, verdict
    assert verdict["attempts"] == 2, verdict
    (repair,) = verdict["repairs"]
    assert "lint:" in repair and "test:" in repair, repair
    pipeline, runs, versions = await stored(session_maker, out.output["pipeline_id"])
    assert [r.status for r in runs] == ["failed", "success"]
    assert [v.change for v in versions] == ["create", "repair"]
    async with session_maker() as session:
        first_commands = {
            s.name: s.commands[0]["run"]
            for s in await session.scalars(
                select(PipelineStage).where(PipelineStage.pipeline_id == pipeline.id)
            )
        }
    assert first_commands["lint"] == first_commands["test"] == "cp -n .env.defaults .env"


async def test_a_code_failure_beside_a_repairable_one_is_still_reported(
    temporal_client, session_maker, task_queue, workers, tmp_path, monkeypatch
):
    """lint fails the repository's own way (no rule), test the pipeline's: test is repaired, and
    the rerun ends with lint's honest diagnosis."""
    monkeypatch.setitem(test_verification.NO_SCAN, "include_lint", True)
    repo = _repo(tmp_path / "repo", FAILS)
    _, out = await generate(temporal_client, session_maker, task_queue, workers, repo)
    verdict = out.output["verification"]
    assert verdict["verified"] is False, verdict
    assert len(verdict["repairs"]) == 1 and verdict["repairs"][0].startswith("test:")
    assert verdict["failed_stage"] == "lint" and verdict["failure_class"] == "code", verdict
    assert str(uuid.UUID(verdict["run_id"]))
