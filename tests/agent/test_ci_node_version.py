"""The Node a repository's own CI runs is the image of its stages when nothing pins one
(core/agent/ci_node.py): the newest version its workflows or Travis name, with the minor they
pin, no newer than the newest Node the generator knows, and only when engines admits it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.ci_node import ci_node_tag, ci_node_values, newest_ci_node
from core.agent.repo_files import RepoFiles
from core.agent.versions import NODE_MAJORS, node_version


def _repo(root: Path, files: dict[str, str]) -> RepoFiles:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return RepoFiles(root)


MATRIX_INCLUDE = """
jobs:
  test:
    strategy:
      matrix:
        name: [Node.js 0.8, Node.js 20.x, Node.js 22.x]
        include:
          - name: Node.js 0.8
            node-version: "0.8"
          - name: Node.js 20.x
            node-version: "20.9"
          - name: Node.js 22.x
            node-version: "22.0"
    steps:
      - run: nvm install ${{ matrix.node-version }}
"""
SETUP_NODE = """
jobs:
  test:
    strategy:
      matrix:
        node-version: [14, 12]
    steps:
      - uses: actions/setup-node@v2
        with:
          node-version: ${{ matrix.node-version }}
"""


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("22.0", "22.0"),
        ("v18.17.1", "18.17.1"),
        ("14.x", "14"),
        ("20.x.x", "20"),
        ("16", "16"),
        ("0.10", None),
        ("lts/*", None),
        (">=18", None),
        ("${{ matrix.node }}", None),
        ("9" * 300, None),
    ],
)
def test_ci_node_tags(value: str, tag: str | None) -> None:
    assert ci_node_tag(value) == tag


def test_the_newest_ci_version_keeps_its_pinned_minor(tmp_path: Path) -> None:
    files = _repo(
        tmp_path,
        {".github/workflows/ci.yml": MATRIX_INCLUDE, "package.json": "{}"},
    )
    assert ci_node_values(files) == ["20.9", "22.0"]
    assert newest_ci_node(files, NODE_MAJORS[-1]) == "22.0"
    pkg = {"engines": {"node": ">= 0.8.0"}}
    choice = node_version(files, "", pkg)
    assert choice.version == "22.0" and "CI" in choice.source


def test_a_ci_on_old_node_is_followed_when_engines_admits_it(tmp_path: Path) -> None:
    files = _repo(tmp_path, {".github/workflows/main.yml": SETUP_NODE})
    assert node_version(files, "", {"engines": {"node": ">=12"}}).version == "14"
    refused = node_version(files, "", {"engines": {"node": ">=18"}})
    assert refused.version != "14" and any("outside engines" in n for n in refused.notes)


def test_a_pin_wins_over_the_ci_and_the_ci_is_capped(tmp_path: Path) -> None:
    newer = NODE_MAJORS[-1] + 1
    files = _repo(
        tmp_path,
        {
            ".github/workflows/ci.yml": (
                "jobs:\n  t:\n    strategy:\n      matrix:\n"
                f"        node: [{NODE_MAJORS[-1]}, {newer}]\n"
            ),
            ".travis.yml": "node_js: ['18']\n",
        },
    )
    assert node_version(files, "", {}).version == str(NODE_MAJORS[-1])
    (tmp_path / ".nvmrc").write_text("20\n")
    assert node_version(files, "", {}).version == "20"


def test_hostile_workflows_are_ignored(tmp_path: Path) -> None:
    files = _repo(
        tmp_path,
        {
            ".github/workflows/a.yml": "jobs: [1, 2]\n",
            ".github/workflows/b.yml": "jobs:\n  x: {strategy: {matrix: [1]}, steps: 5}\n",
            ".github/workflows/c.yml": "jobs:\n  x:\n    steps:\n      - {uses: 7, with: 3}\n",
            ".github/workflows/d.yml": ":\n  - [unbalanced\n",
            ".travis.yml": "node_js: {a: 1}\n",
        },
    )
    assert ci_node_values(files) == []
    assert node_version(files, "", {}).version != ""


def test_the_generated_stages_run_on_the_ci_node(tmp_path: Path) -> None:
    pkg = {
        "name": "lib",
        "engines": {"node": ">=12"},
        "scripts": {"test": "ava"},
        "devDependencies": {"ava": "^3"},
    }
    _repo(tmp_path, {".github/workflows/main.yml": SETUP_NODE, "package.json": json.dumps(pkg)})
    analysis = analyze_repository(tmp_path)
    assert [a.image for a in analysis.apps] == ["node:14"]
