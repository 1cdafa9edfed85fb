"""Hostile YAML/JSON/TOML in a repository: alias bombs, nesting bombs and huge files are refused
by the one bounded loader, and the planner says which file it did not read instead of dying."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.proposal import propose_pipeline
from core.agent.repo_files import MAX_MANIFEST_BYTES
from forgeline.safe_parsing import (
    MAX_DOCUMENT_BYTES,
    MAX_DOCUMENT_DEPTH,
    UnsafeDocument,
    load_json,
    load_toml,
    load_yaml,
)
from workflows.agent_models import Preferences

# Six levels of ten: ~400 bytes that expand to a million strings once aliases are followed.
ALIAS_BOMB = (
    'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 6))
    + f"packages: [{','.join(['*l5'] * 10)}]\n"
)
DEEP = 100_000  # far past every parser's recursion limit, still under the manifest size cap
YAML_DEEP = "packages: " + "[" * DEEP + "]" * DEEP + "\n"
JSON_DEEP = '{"name": "x", "a": ' + "[" * DEEP + "]" * DEEP + "}"
TOML_DEEP = "[project]\nname = 'x'\ndeps = " + "[" * DEEP + "]" * DEEP + "\n"
# Dotted keys nest without recursion in the parser: the depth check after parsing catches them.
TOML_DOTTED = "[" + ".".join(["a"] * 200) + "]\nx = 1\n"


def test_yaml_refuses_aliases_depth_size_and_garbage() -> None:
    with pytest.raises(UnsafeDocument, match="anchors and aliases"):
        load_yaml(ALIAS_BOMB)
    with pytest.raises(UnsafeDocument, match="anchors and aliases"):
        load_yaml("base: &b {x: 1}\nother:\n  <<: *b\n")  # merge keys need an alias too
    with pytest.raises(UnsafeDocument, match="deeper than"):
        load_yaml(YAML_DEEP)
    with pytest.raises(UnsafeDocument, match="larger than"):
        load_yaml("a: " + "x" * MAX_DOCUMENT_BYTES)
    with pytest.raises(UnsafeDocument, match="larger than"):
        load_yaml("a: " + "é" * (MAX_DOCUMENT_BYTES // 2))  # counted in bytes, not characters
    with pytest.raises(UnsafeDocument, match="does not parse"):
        load_yaml("a: [unclosed")
    with pytest.raises(UnsafeDocument, match="does not parse"):
        load_yaml("!!python/object/apply:os.system ['true']")
    nested = "a: " + "[" * MAX_DOCUMENT_DEPTH + "]" * MAX_DOCUMENT_DEPTH
    with pytest.raises(UnsafeDocument, match="deeper than"):
        load_yaml(nested)
    assert load_yaml("packages:\n  - apps/*\n") == {"packages": ["apps/*"]}


def test_json_refuses_depth_size_and_garbage() -> None:
    with pytest.raises(UnsafeDocument, match="deeper than"):
        load_json(JSON_DEEP)
    with pytest.raises(UnsafeDocument, match="deeper than"):
        load_json("[" * (MAX_DOCUMENT_DEPTH + 1) + "]" * (MAX_DOCUMENT_DEPTH + 1))
    with pytest.raises(UnsafeDocument, match="larger than"):
        load_json(json.dumps({"a": "x" * MAX_DOCUMENT_BYTES}))
    with pytest.raises(UnsafeDocument, match="does not parse"):
        load_json('{"a": ')
    with pytest.raises(UnsafeDocument, match="does not parse"):
        load_json("1" * 5000)  # past Python's integer digit limit
    deepest_allowed = "[" * (MAX_DOCUMENT_DEPTH - 1) + "]" * (MAX_DOCUMENT_DEPTH - 1)
    assert load_json(f'{{"a": {deepest_allowed}}}') is not None


def test_toml_refuses_depth_size_and_garbage() -> None:
    with pytest.raises(UnsafeDocument, match="deeper than"):
        load_toml(TOML_DEEP)
    with pytest.raises(UnsafeDocument, match="deeper than"):
        load_toml(TOML_DOTTED)
    with pytest.raises(UnsafeDocument, match="larger than"):
        load_toml('a = "' + "x" * MAX_DOCUMENT_BYTES + '"\n')
    with pytest.raises(UnsafeDocument, match="does not parse"):
        load_toml("[project\n")
    assert load_toml("[project]\nname = 'x'\n") == {"project": {"name": "x"}}


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def _plan(root: Path) -> list[str]:
    """The planner's whole path: analysis, then a proposal from it."""
    analysis = analyze_repository(root)
    propose_pipeline(analysis, Preferences())
    return analysis.notes


def test_pnpm_alias_bomb_is_not_expanded(tmp_path: Path) -> None:
    pkg = json.dumps({"name": "mono", "scripts": {"build": "turbo build"}})
    repo = _write(
        tmp_path,
        {
            "package.json": pkg,
            "pnpm-lock.yaml": "lockfileVersion: '9.0'\n",
            "pnpm-workspace.yaml": ALIAS_BOMB,
            "apps/web/package.json": json.dumps({"name": "web", "dependencies": {"vite": "5"}}),
        },
    )
    analysis = analyze_repository(repo)
    assert analysis.workspace_tool != "pnpm-workspace"
    assert "pnpm-workspace.yaml was not read: YAML anchors and aliases are not accepted" in (
        analysis.notes
    )
    # Nothing from the bomb reached the analysis (its dump stays small).
    assert len(analysis.model_dump_json()) < 20_000
    propose_pipeline(analysis, Preferences())


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("pnpm-workspace.yaml", YAML_DEEP, "YAML document nests deeper than"),
        ("package.json", JSON_DEEP, "JSON document nests deeper than"),
        ("pyproject.toml", TOML_DEEP, "TOML document nests deeper than"),
        ("Cargo.toml", TOML_DOTTED, "TOML document nests deeper than"),
        ("composer.json", '{"require": ', "JSON does not parse"),
        ("package.json", json.dumps({"pad": "x" * MAX_MANIFEST_BYTES}), "larger than"),
        ("pnpm-workspace.yaml", "packages: [" + "'a'," * MAX_MANIFEST_BYTES + "]", "larger than"),
        ("pyproject.toml", 'pad = "' + "x" * MAX_MANIFEST_BYTES + '"\n', "larger than"),
    ],
    ids=lambda v: v if len(v) < 30 else "",
)
def test_planner_survives_hostile_manifest(
    name: str, content: str, reason: str, tmp_path: Path
) -> None:
    """A hostile manifest beside a healthy Go app: the Go app is still found, and the analysis
    names the file that was skipped and why."""
    repo = _write(
        tmp_path,
        {name: content, "go.mod": "module example.com/app\n\ngo 1.22\n", "main.go": "package main"},
    )
    notes = _plan(repo)
    assert any(n.startswith(f"{name} was not read: ") and reason in n for n in notes), notes
    assert analyze_repository(repo).primary.framework == "go"
