"""Declared commands read as a maintainer reads them (core/agent/ci_configs.py, declared.py):
a command that rewrites the code (an autofix workflow's `pnpm lint:fix`) is never the lint
stage's check, and `pnpm vitest` / `yarn jest` run a dependency's own command when no script
has that name (before, the CI's `pnpm vitest --coverage` was dropped and the tests never ran)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.ci_configs import kind_of

AUTOFIX = """
jobs:
  autofix:
    runs-on: ubuntu-latest
    steps:
      - run: pnpm install
      - run: pnpm lint:fix
"""
CI = """
jobs:
  ci:
    runs-on: ubuntu-latest
    steps:
      - run: pnpm install
      - run: pnpm lint
      - run: pnpm build
      - run: pnpm test:types
      - run: pnpm vitest --coverage
      - run: pnpm not-a-dependency --flag
"""


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("pnpm lint:fix", None),
        ("npm run lint -- --fix", None),
        ("eslint --fix .", None),
        ("prettier -w src", None),
        ("prettier --write .", None),
        ("ruff format .", None),
        ("ruff format --check .", "lint"),
        ("pnpm lint", "lint"),
        ("prettier -c src", "lint"),
        ("npx eslint . --max-warnings=0", "lint"),
        ("pnpm run fix:all", None),
    ],
)
def test_fixers_are_no_lint(line: str, kind: str | None) -> None:
    assert kind_of(line) == kind


def _repo(root: Path, pkg: Mapping[str, object], workflows: dict[str, str]) -> Path:
    (root / "package.json").write_text(json.dumps(pkg))
    (root / "pnpm-lock.yaml").write_text("lockfileVersion: '9.0'\n")
    (root / ".github" / "workflows").mkdir(parents=True)
    for name, text in workflows.items():
        (root / ".github" / "workflows" / name).write_text(text)
    return root


def test_an_autofix_workflow_before_the_ci_gives_no_lint(tmp_path: Path) -> None:
    pkg = {
        "name": "lib",
        "scripts": {
            "lint": "eslint .",
            "lint:fix": "eslint --fix .",
            "build": "unbuild",
            "test:types": "tsc --noEmit",
            "test": "pnpm lint && vitest run",
        },
        "devDependencies": {"vitest": "^4", "eslint": "^9", "unbuild": "^3"},
    }
    root = _repo(tmp_path, pkg, {"autofix.yml": AUTOFIX, "ci.yml": CI})
    (app,) = analyze_repository(root).apps
    assert app.lint_command == "pnpm lint"
    assert app.test_command == "pnpm test:types && pnpm vitest --coverage"


def test_a_bin_only_a_script_could_name_is_refused(tmp_path: Path) -> None:
    """`pnpm x` where x is neither a script nor a dependency is not taken (hostile or stale
    CI lines do not become the pipeline's commands), and npm never runs bins by name."""
    pkg = {"name": "lib", "scripts": {"test": "vitest run"}, "devDependencies": {"vitest": "4"}}
    workflow = "jobs:\n  t:\n    steps:\n      - run: pnpm not-a-dependency\n"
    root = _repo(tmp_path, pkg, {"ci.yml": workflow})
    (app,) = analyze_repository(root).apps
    assert app.test_command is None or "not-a-dependency" not in app.test_command
