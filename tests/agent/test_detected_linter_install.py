"""A pip project's detected linter (ruff.toml, .flake8) is installed when the install does not
bring it, at the version its pre-commit config pins when it pins one."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.lint_install import install_detected_linter
from core.agent.repo_files import RepoFiles
from tests.agent.corpus.sample import SampleRepo, write_repo
from workflows.agent_models import AppDetection

PYPROJECT = '[project]\nname = "lib"\nversion = "1"\ndependencies = [{deps}]\n'
PRE_COMMIT = """repos:
  - repo: https://github.com/astral-sh/ruff-pre-commit
    rev: v0.15.8
    hooks:
      - id: ruff
        args: [ --fix ]
"""


def _lint(tmp_path: Path, files: dict[str, str]) -> str | None:
    sample = SampleRepo("lib", "python", {"lib/__init__.py": "", **files})
    return analyze_repository(write_repo(sample, tmp_path)).primary.lint_command


def test_ruff_from_its_config_is_installed_at_the_pinned_version(tmp_path: Path) -> None:
    files = {
        "pyproject.toml": PYPROJECT.format(deps=""),
        "ruff.toml": "line-length = 100\n",
        ".pre-commit-config.yaml": PRE_COMMIT,
    }
    assert _lint(tmp_path, files) == "pip install ruff==0.15.8 && python -m ruff check ."


def test_without_a_pin_the_latest_is_installed(tmp_path: Path) -> None:
    files = {"pyproject.toml": PYPROJECT.format(deps=""), ".flake8": "[flake8]\n"}
    assert _lint(tmp_path, files) == "pip install flake8 && python -m flake8"


def test_a_linter_the_install_brings_is_not_installed_again(tmp_path: Path) -> None:
    files = {"pyproject.toml": PYPROJECT.format(deps='"ruff>=0.5"'), "ruff.toml": ""}
    assert _lint(tmp_path, files) == "python -m ruff check ."


def _app(command: str | None, manager: str | None = "pip") -> AppDetection:
    return AppDetection(
        name="lib",
        language="python",
        framework="python",
        confidence=1.0,
        package_manager=manager,
        install_command="pip install .",
        lint_command=command,
    )


@pytest.mark.parametrize(
    ("command", "manager"),
    [
        ("python -m ruff check .", "poetry"),  # a managed environment: refused, not rewritten
        ("poetry run ruff check .", "poetry"),
        ("make lint", "pip"),  # a declared command is fitted where it is read
        ("pip install ruff && python -m ruff check .", "pip"),
        (None, "pip"),
    ],
)
def test_left_as_it_is(tmp_path: Path, command: str | None, manager: str) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(deps=""))
    app = _app(command, manager)
    install_detected_linter(RepoFiles(tmp_path), app)
    assert app.lint_command == command


@pytest.mark.parametrize(
    "config",
    [
        "repos:\n  - repo: x\n    rev: '1.0; touch /tmp/pwned'\n    hooks:\n      - id: ruff\n",
        "repos:\n  - repo: x\n    rev: $(id)\n    hooks:\n      - id: ruff\n",
        "\x00" * 100_000,
        "[not yaml",
    ],
)
def test_a_hostile_pre_commit_config_pins_nothing_it_says(tmp_path: Path, config: str) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(deps=""))
    (tmp_path / ".pre-commit-config.yaml").write_text(config)
    app = _app("python -m ruff check .")
    install_detected_linter(RepoFiles(tmp_path), app)
    assert app.lint_command == "pip install ruff && python -m ruff check ."


def test_applied_twice_installs_once(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(deps=""))
    app = _app("python -m ruff check .")
    files = RepoFiles(tmp_path)
    install_detected_linter(files, app)
    install_detected_linter(files, app)
    assert app.lint_command == "pip install ruff && python -m ruff check ."
