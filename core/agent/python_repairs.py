"""Repairs of Python stages whose tool release does not fit the repository's configuration of
it: a nox that refuses what the noxfile sets (`'NoxOptions' object has no attribute ...`) is
installed as the noxfile needs it (core.agent.python_tool_pins)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from core.agent.python_tool_pins import NOX_OPTIONS_REFUSED, nox_requirement
from core.agent.repo_files import RepoFiles

# `pip install nox`, `python -m pip install --upgrade nox`, `pip install -U nox` (an unpinned
# nox among the words of one pip install).
_PIP_INSTALL = re.compile(r"\b(?:python3?\s+-m\s+)?pip\s+install\b[^&;|\n]*")
_UNPINNED_NOX = re.compile(r"(?<![\w.=<>~!'\"-])nox(?![\w.=<>~!\[-])")


def _pinned(command: str, requirement: str) -> str:
    def pin(match: re.Match[str]) -> str:
        return _UNPINNED_NOX.sub(requirement, match.group(0), count=1)

    return _PIP_INSTALL.sub(pin, command)


def nox_release(commands: list[str], text: str, workdir: Path) -> tuple[list[str], str] | None:
    """nox refused an option its noxfile sets: the stage's commands installing the release the
    noxfile was written for, and the diagnosis; None when this is not that failure."""
    if NOX_OPTIONS_REFUSED.search(text) is None:
        return None
    requirement = shlex.quote(nox_requirement(RepoFiles(workdir).text("noxfile.py"), refused=True))
    fixed = [_pinned(c, requirement) for c in commands]
    if fixed == commands:
        return None
    return fixed, (
        "the newest nox refuses an option the noxfile sets (nox's options became strict in "
        f"2025.2.9): the stage installs {requirement}"
    )
