"""A bare tox run in a Python matrix leg runs the tox environments of the leg's Python.

CI configurations run `tox` once per Python with a plugin (tox-gh-actions, tox-gh) that picks
the environments of the running interpreter; without it a leg runs the whole envlist: every
Python's environments (which the leg's image lacks), linters and docs, once per leg. tox 4's
`-f py3XY` selects the environments whose factors name the leg's Python."""

from __future__ import annotations

import re

from core.agent.matrix import _tox_envs
from core.agent.repo_files import RepoFiles
from workflows.agent_models import AppDetection

_SEPARATOR = r"(?:^|&&|;|\|\|)"
# `tox`, `tox run`, `python -m tox` with no environment selection of its own, ending a command.
BARE_TOX = re.compile(rf"{_SEPARATOR}\s*(?:python3? -m )?tox(?: run)?\s*(?=$|&&|;|\|\|)")
LEG_FACTOR = ' -f "py$(echo "$PYTHON_VERSION" | tr -d .)"'


def tox_per_leg(files: RepoFiles, app: AppDetection) -> None:
    """Selects the leg's environments in `app.test_command` when every matrix Python has
    environments of its own in the tox configuration (else the run stays as it is)."""
    command = app.test_command or ""
    match = BARE_TOX.search(command)
    if match is None or len(app.version_matrix) < 2 or not (app.image or "").startswith("python:"):
        return
    factors = {f for env in _tox_envs(files, app.path or ".") for f in env.split("-")}
    if not all(f"py{v.replace('.', '')}" in factors for v in app.version_matrix):
        return
    head, tail = command[: match.end()].rstrip(), command[match.end() :].strip()
    app.test_command = head + LEG_FACTOR + (f" {tail}" if tail else "")
