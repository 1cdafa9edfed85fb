"""Dependency caches of generated stages: every stage of an app (install, lint, each test leg,
build) shares one cache key, from the lockfiles or, without any, the manifests, so the first stage
to finish saves the cache and the others restore it instead of each saving a copy of its own."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from core.agent.analysis import analyze_repository
from core.agent.generated_pipelines import stage_columns
from core.agent.proposal import propose_pipeline
from core.runs.stage_cache import cache_key
from core.runs.stage_runtime_plan import stage_cache
from forgeline.pipeline_spec import PipelineProposal
from forgeline.pipeline_validation import validate_proposal
from tests.agent.corpus.sample import SampleRepo, json_text, package_json, write_repo

NODE_NO_LOCK = SampleRepo(
    "node-no-lockfile",
    "node",
    {
        "package.json": package_json(
            {"express": "^4.19.0"},
            {"test": "mocha", "lint": "eslint ."},
            engines={"node": ">=18"},
        ),
        "index.js": "module.exports = {};\n",
        ".github/workflows/ci.yml": (
            "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    strategy:\n"
            "      matrix:\n        node-version: [18, 20, 22]\n    steps:\n"
            "      - uses: actions/setup-node@v4\n        with:\n"
            "          node-version: ${{ matrix.node-version }}\n      - run: npm test\n"
        ),
    },
)
NODE_LOCK = SampleRepo(
    "node-lockfile",
    "node",
    {
        "package.json": package_json({"express": "^4.19.0"}, {"test": "mocha", "lint": "eslint ."}),
        "package-lock.json": json_text({"name": "app", "lockfileVersion": 3, "packages": {}}),
        "index.js": "module.exports = {};\n",
    },
)
PIP_NO_LOCK = SampleRepo(
    "pip-no-lockfile",
    "python",
    {
        "requirements.txt": "flask==3.0.0\npytest\n",
        "app.py": "from flask import Flask\napp = Flask(__name__)\n",
        "tests/test_app.py": "def test_app():\n    assert True\n",
    },
)


def _rows(proposal: PipelineProposal, pipeline_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = []
    for stage in proposal.stages:
        row = stage_columns(stage)
        row.update(name=stage.name, pipeline_id=str(pipeline_id))
        rows.append(row)
    return [r for r in rows if r.get("cache_paths")]


def _keys(proposal: PipelineProposal, repo: Path) -> set[str]:
    """The exact cache key the runner computes for each cached stage (key files named from the
    repository's root, whatever the stage's working directory)."""
    keys = set()
    for row in _rows(proposal, uuid.uuid4()):
        cache = stage_cache(row)
        assert cache is not None
        keys.add(cache_key(cache, repo))
    return keys


@pytest.mark.parametrize("sample", [NODE_NO_LOCK, NODE_LOCK, PIP_NO_LOCK], ids=lambda s: s.name)
def test_every_cached_stage_of_an_app_shares_one_key(sample: SampleRepo, tmp_path: Path) -> None:
    repo = write_repo(sample, tmp_path)
    proposal = propose_pipeline(analyze_repository(repo))
    assert validate_proposal(proposal).valid
    assert len(_rows(proposal, uuid.uuid4())) >= 2
    assert len(_keys(proposal, repo)) == 1


def test_without_a_lockfile_the_manifest_keys_the_cache(tmp_path: Path) -> None:
    repo = write_repo(NODE_NO_LOCK, tmp_path)
    proposal = propose_pipeline(analyze_repository(repo))
    assert all(s.cache_key_files == ["package.json"] for s in proposal.stages if s.cache_paths)
    before = _keys(proposal, repo)
    # A dependency change is a new key (a stale cache is never restored as exact).
    (repo / "package.json").write_text(package_json({"express": "^5.0.0"}, {"test": "mocha"}))
    assert _keys(proposal, repo).isdisjoint(before)


def test_a_lockfile_keys_the_cache_before_the_manifest(tmp_path: Path) -> None:
    repo = write_repo(NODE_LOCK, tmp_path)
    proposal = propose_pipeline(analyze_repository(repo))
    assert all(s.cache_key_files == ["package-lock.json"] for s in proposal.stages if s.cache_paths)


def test_matrix_legs_share_the_key_of_their_stage(tmp_path: Path) -> None:
    repo = write_repo(NODE_NO_LOCK, tmp_path)
    proposal = propose_pipeline(analyze_repository(repo))
    test = next(s for s in proposal.stages if s.stage_type == "test")
    assert test.matrix, "the declared node versions make a matrix"
    install = next(s for s in proposal.stages if s.stage_type == "install")
    assert test.cache_key_files == install.cache_key_files


def test_an_unreadable_manifest_still_gives_one_key(tmp_path: Path) -> None:
    # Not JSON, binary noise and a huge line: the key is the file's hash, whatever it holds.
    files = dict(NODE_NO_LOCK.files)
    files["package.json"] = "{not json \x00\x01" + "x" * 200_000
    repo = write_repo(SampleRepo("node-broken-manifest", "node", files), tmp_path)
    proposal = propose_pipeline(analyze_repository(repo))
    assert validate_proposal(proposal).valid
    assert len(_keys(proposal, repo)) <= 1
