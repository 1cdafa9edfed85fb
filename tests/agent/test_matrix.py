"""A version matrix where the repository declares one: its CI config's matrix, tox's envlist or
nox's sessions; carried into the test stage and both exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from core.agent.analysis import analyze_repository
from core.agent.matrix import declared_matrix
from core.agent.proposal import propose_pipeline
from core.agent.repo_files import RepoFiles
from forgeline.pipeline_export import to_github_actions, to_gitlab_ci
from forgeline.pipeline_spec import ProposedStage
from forgeline.pipeline_validation import validate_proposal


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    return root


def _matrix(root: Path, files: dict[str, str], language: str = "python") -> list[str]:
    return declared_matrix(RepoFiles(_write(root, files)), ".", language)


def test_tox_envlist_forms(tmp_path: Path) -> None:
    assert _matrix(tmp_path / "a", {"tox.ini": "[tox]\nenvlist = py39, py310, py311, lint\n"}) == [
        "3.9", "3.10", "3.11",
    ]  # fmt: skip
    generative = "[tox]\nenvlist =\n    py{38,39,310}-django{32,42}\n    docs\n"
    assert _matrix(tmp_path / "b", {"tox.ini": generative}) == ["3.8", "3.9", "3.10"]
    legacy = '[tool.tox]\nlegacy_tox_ini = """\n[tox]\nenvlist = py311,py312\n"""\n'
    assert _matrix(tmp_path / "c", {"pyproject.toml": legacy}) == ["3.11", "3.12"]
    assert _matrix(tmp_path / "d", {"tox.toml": 'env_list = ["3.13", "3.12", "lint"]\n'}) == [
        "3.12", "3.13",
    ]  # fmt: skip
    assert _matrix(tmp_path / "e", {"tox.ini": "[tox]\nenvlist = py311\n"}) == []


def test_nox_sessions(tmp_path: Path) -> None:
    noxfile = '@nox.session(python=["3.10", "3.11", "3.12"])\ndef tests(session): ...\n'
    assert _matrix(tmp_path, {"noxfile.py": noxfile}) == ["3.10", "3.11", "3.12"]


def test_github_actions_and_travis_matrices(tmp_path: Path) -> None:
    workflow = {
        "jobs": {
            "test": {
                "strategy": {
                    "matrix": {
                        "node-version": ["18.x", "20.x", 22],
                        "include": [{"node-version": "24"}],
                    }
                }
            },
            "other": {"strategy": {"matrix": "${{ fromJSON(needs.x.outputs.m) }}"}},
        }
    }
    files = {".github/workflows/ci.yml": yaml.safe_dump(workflow)}
    assert _matrix(tmp_path / "a", files, "typescript") == ["18", "20", "22", "24"]
    travis = {"language": "python", "python": ["3.9", "3.10", "3.1"]}  # 3.1: YAML ate a zero
    assert _matrix(tmp_path / "b", {".travis.yml": yaml.safe_dump(travis)}) == ["3.9", "3.10"]
    assert _matrix(tmp_path / "c", {".travis.yml": "python: 3.11\n"}) == []


def test_hostile_and_huge_declarations_are_bounded(tmp_path: Path) -> None:
    bomb = (
        "[tox]\nenvlist = py{" + ",".join(str(i) for i in range(300)) + "}-x{" + "a," * 300 + "}\n"
    )
    # Each brace keeps its first choices only, and the expansion stops at 200 names.
    assert _matrix(tmp_path / "a", {"tox.ini": bomb}) == []
    assert _matrix(tmp_path / "a2", {"tox.ini": "[tox]\nenvlist = py3{9,10,11,12}\n"}) == [
        "3.9", "3.10", "3.11", "3.12",
    ]  # fmt: skip
    assert _matrix(tmp_path / "b", {"tox.ini": "[tox\nenvlist = ]]]"}) == []
    evil = {
        "jobs": {"t": {"strategy": {"matrix": {"python-version": ["3.11; rm -rf /", "$(id)"]}}}}
    }
    files = {".github/workflows/ci.yml": yaml.safe_dump(evil)}
    assert _matrix(tmp_path / "c", files) == []
    with pytest.raises(ValidationError):
        ProposedStage(
            name="t", stage_type="test", commands=["x"], matrix={"PYTHON_VERSION": ["3.11 || id"]}
        )
    with pytest.raises(ValidationError):
        ProposedStage(name="t", stage_type="test", commands=["x"], matrix={"bad-name": ["1"]})


def test_the_test_stage_fans_out_and_both_exports_carry_it(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "pyproject.toml": '[project]\nname = "lib"\nrequires-python = ">=3.10"\n'
            'dependencies = []\n[project.optional-dependencies]\ntest = ["pytest"]\n',
            "tox.ini": "[tox]\nenvlist = py310, py311, py312\n",
            "tests/test_x.py": "def test_x(): pass\n",
        },
    )
    proposal = propose_pipeline(analyze_repository(root))
    test = next(s for s in proposal.stages if s.stage_type == "test")
    assert test.matrix == {"PYTHON_VERSION": ["3.10", "3.11", "3.12"]}
    assert test.image == "python:${PYTHON_VERSION}"
    others = [s for s in proposal.stages if s.stage_type != "test"]
    assert all(not s.matrix for s in others)
    gha = to_github_actions(proposal)["jobs"]["test"]
    assert gha["strategy"]["matrix"] == {"PYTHON_VERSION": ["3.10", "3.11", "3.12"]}
    assert gha["container"] == "python:${{ matrix.PYTHON_VERSION }}"
    gitlab = to_gitlab_ci(proposal)["test"]
    assert gitlab["parallel"] == {"matrix": [{"PYTHON_VERSION": ["3.10", "3.11", "3.12"]}]}
    assert gitlab["image"] == "python:${PYTHON_VERSION}"
    report = validate_proposal(proposal)
    assert report.valid, report.errors


def test_node_matrix_from_the_ci_config(tmp_path: Path) -> None:
    pkg = {"name": "lib", "scripts": {"test": "vitest run"}, "devDependencies": {"vitest": "1"}}
    workflow = {"jobs": {"t": {"strategy": {"matrix": {"node": [18, 20]}}}}}
    root = _write(
        tmp_path,
        {
            "package.json": json.dumps(pkg),
            "package-lock.json": "{}",
            ".github/workflows/test.yml": yaml.safe_dump(workflow),
        },
    )
    proposal = propose_pipeline(analyze_repository(root))
    test = next(s for s in proposal.stages if s.stage_type == "test")
    assert (test.matrix, test.image) == ({"NODE_VERSION": ["18", "20"]}, "node:${NODE_VERSION}")
    assert validate_proposal(proposal).valid
