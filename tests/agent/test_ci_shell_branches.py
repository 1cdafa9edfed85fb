"""A CI step's shell `if` is read as the shell runs it (core/agent/ci_configs.py): the first
branch's commands are the step's, `elif`/`else` branches are alternatives. Before, both
branches of `if nyc is there; then npm run test-ci; else npm test; fi` were joined and the
tests ran twice."""

from __future__ import annotations

import json
from pathlib import Path

from core.agent.analysis import analyze_repository
from core.agent.ci_configs import _first_branches, _lines

WORKFLOW = """
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - run: npm install
      - name: Run tests
        shell: bash
        run: |
          if npm -ps ls nyc | grep -q nyc; then
            npm run test-ci
          else
            npm test
          fi
"""


def test_else_branches_are_alternatives() -> None:
    script = "if a; then\n  one\nelif b; then\n  two\nelse\n  three\nfi\nafter\n"
    assert _lines(script) == ["one", "after"]


def test_nested_ifs_inside_an_alternative_stay_out() -> None:
    lines = ["if a", "then", "x", "else", "if b; then", "y", "fi", "z", "fi", "w"]
    assert _first_branches(lines) == ["x", "w"]


def test_a_command_after_then_on_the_if_line_counts() -> None:
    assert _first_branches(["if a; then npm test", "else npm run other", "fi"]) == ["npm test"]


def test_hostile_scripts_do_not_break_the_reader() -> None:
    # Unbalanced keywords, a stray fi, else without if, a one-line if, deep nesting.
    lines = ["fi", "else", "then", "if x; then y; else z; fi", *(["if q"] * 500), "npm test"]
    read = _first_branches(lines)
    assert "npm test" in read and "then" not in read
    assert not any(line.startswith("if q") for line in read)
    assert _lines(None) == [] and _lines([1, {"a": 2}]) == []


def test_the_generated_test_stage_runs_the_tests_once(tmp_path: Path) -> None:
    pkg = {
        "name": "mw",
        "scripts": {
            "test": "mocha",
            "test-ci": "nyc --reporter=lcov npm test",
        },
        "devDependencies": {"mocha": "10", "nyc": "15"},
    }
    (tmp_path / "package.json").write_text(json.dumps(pkg))
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "ci.yml").write_text(WORKFLOW)
    (app,) = analyze_repository(tmp_path).apps
    assert app.test_command == "npm run test-ci"
