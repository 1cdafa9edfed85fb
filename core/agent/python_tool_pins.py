"""The release of a Python tool a stage installs for the repository's own configuration of it:
nox as its noxfile asks (`nox.needs_version`), and below the release that stopped accepting
what the noxfile sets (nox 2025.2.9 refuses attributes of `nox.options` it does not know, such
as `nox.options.needs_version`, which earlier releases stored silently). The noxfile is read as
bounded text, never imported; a specifier is used only when `packaging` parses it."""

from __future__ import annotations

import re
import shlex

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from core.agent.repo_files import RepoFiles, join

MAX_NOXFILE_CHARS = 256 * 1024
MAX_SPECIFIER_CHARS = 200
# nox.options attributes nox's strict options (NoxOptions) have, and newer ones (download_python).
NOX_OPTIONS = frozenset(
    {
        "default_venv_backend", "envdir", "error_on_external_run", "error_on_missing_interpreters",
        "force_venv_backend", "keywords", "pythons", "report", "reuse_existing_virtualenvs",
        "reuse_venv", "sessions", "stop_on_first_error", "tags", "verbose", "download_python",
    }
)  # fmt: skip
# The first nox release whose options refuse an attribute they do not know (an AttributeError
# when the noxfile loads).
NOX_STRICT_OPTIONS = "2025.2.9"
_NEEDS = re.compile(
    r"^\s*nox\.(?:options\.)?needs_version\s*(?::\s*str\s*)?=\s*(['\"])([^'\"\n]{1,200})\1", re.M
)
_OPTION = re.compile(r"^\s*nox\.options\.([A-Za-z_]\w{0,60})\s*(?::[^=\n]{0,60})?=(?!=)", re.M)
# The log of a noxfile nox's strict options refused.
NOX_OPTIONS_REFUSED = re.compile(
    r"AttributeError: '(?:Nox|Noxfile)Options' object has no attribute '(\w{1,60})'"
)


def _specifier(text: str) -> SpecifierSet | None:
    try:
        return SpecifierSet(text.strip()[:MAX_SPECIFIER_CHARS])
    except InvalidSpecifier:
        return None


def _admits_older(spec: SpecifierSet | None) -> bool:
    """Whether the declared needs leave room below the strict release (no upper bound of their
    own, no lower bound at or past it)."""
    strict = Version(NOX_STRICT_OPTIONS)
    for item in spec or []:
        if item.operator in ("<", "<=", "==", "===", "~="):
            return False
        if item.operator in (">", ">=") and _version(item.version) >= strict:
            return False
    return True


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


def nox_requirement(noxfile: str | None, refused: bool = False) -> str:
    """`nox` with the noxfile's version needs: its declared `needs_version`, and below the strict
    options' release when it sets an option nox does not know (or a run showed `refused`)."""
    text = (noxfile or "")[:MAX_NOXFILE_CHARS]
    parts: list[str] = []
    needs = _NEEDS.search(text)
    spec = _specifier(needs.group(2)) if needs is not None else None
    if spec is not None:
        parts.extend(str(s) for s in sorted(spec, key=str))
    unknown = {m for m in _OPTION.findall(text) if m not in NOX_OPTIONS}
    if (unknown or refused) and _admits_older(spec):
        parts.append(f"<{NOX_STRICT_OPTIONS}")
    return "nox" + ",".join(parts)


def tool_requirement(tool: str, files: RepoFiles, base: str) -> str:
    """What `pip install` gets for a tool the stage adds, shell-quoted: the tool's name, or
    with the versions the repository's configuration of it needs."""
    if tool == "nox":
        return shlex.quote(nox_requirement(files.text(join(base, "noxfile.py"))))
    return tool
