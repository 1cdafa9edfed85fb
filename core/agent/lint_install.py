"""The linter the Python detector picks from a configuration file (ruff.toml, .flake8) is
installed first when the project's pip install does not bring it: at the version the
repository's pre-commit config pins for it, else the latest. A pip project's lint stage ran
`python -m ruff check .` in an environment without ruff ("No module named ruff")."""

from __future__ import annotations

import re

from core.agent.declared import fit
from core.agent.precommit_tools import configured_linters
from core.agent.repo_files import RepoFiles, join
from workflows.agent_models import AppDetection

# The detector's own lint commands (a CI's declared command is fitted where it is read).
DETECTED_LINT = re.compile(r"python -m (ruff|flake8)(?: check \.)?")
_PIP_TOOL = re.compile(r"^pip install (ruff|flake8) && ")


def _pinned(files: RepoFiles, base: str, package: str) -> str | None:
    """`package==X` as the pre-commit config pins it (shell-quoted by configured_linters)."""
    found = configured_linters(files.text(join(base, ".pre-commit-config.yaml")))
    install = found[0].split()[2:] if found else []
    return next((w for w in install if w.strip("'").startswith(f"{package}==")), None)


def install_detected_linter(files: RepoFiles, app: AppDetection) -> None:
    command = app.lint_command or ""
    if app.language != "python" or app.package_manager != "pip":
        return
    if DETECTED_LINT.fullmatch(command) is None:
        return
    fitted = fit(command, app, files)
    match = _PIP_TOOL.match(fitted or "")
    if fitted is None or match is None:
        return
    pinned = _pinned(files, app.path or ".", match.group(1))
    app.lint_command = fitted if pinned is None else f"pip install {pinned} && {command}"
