"""The linters a repository's `.pre-commit-config.yaml` runs, as direct commands at the versions
it pins: what a lint stage runs instead of `pre-commit` when the hook repositories (git clones,
usually from GitHub) are outside the build network but the tools are on the package registries.
Read as text, line by line and bounded; nothing in it is fetched or executed."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

MAX_CONFIG_CHARS = 64 * 1024
_REPO = re.compile(r"^\s*-\s*repo:\s*(\S{1,500})")
_REV = re.compile(r"^\s*rev:\s*['\"]?([^\s'\"#]{1,100})['\"]?\s*(?:#\s*frozen:\s*(\S{1,100}))?")
_ID = re.compile(r"^\s*-\s*id:\s*['\"]?([\w.-]{1,100})")
_VERSION = re.compile(r"^v?(\d{1,6}(?:\.\d{1,6}){0,3})$")


@dataclass(frozen=True)
class HookTool:
    """A pip package and the check command a hook id stands for."""

    package: str
    command: str


# Hooks whose tool is a Python package that checks without rewriting files.
HOOKS: dict[str, HookTool] = {
    "ruff": HookTool("ruff", "ruff check ."),
    "ruff-check": HookTool("ruff", "ruff check ."),
    "ruff-format": HookTool("ruff", "ruff format --check ."),
    "black": HookTool("black", "black --check ."),
    "flake8": HookTool("flake8", "flake8"),
    "isort": HookTool("isort", "isort --check-only ."),
}


def _version(rev: str, frozen: str | None) -> str | None:
    for candidate in (frozen, rev):
        match = _VERSION.match(candidate or "")
        if match is not None:
            return match.group(1)
    return None


def configured_linters(text: str | None) -> list[str]:
    """The commands that run the config's linters directly (`pip install 'ruff==0.11.11'`, then
    each check), or [] when it names none of the tools known here."""
    if not text:
        return []
    versions: dict[str, str | None] = {}
    checks: list[str] = []
    rev: str | None = None
    for line in text[:MAX_CONFIG_CHARS].splitlines()[:2000]:
        if _REPO.match(line):
            rev = None
            continue
        found_rev = _REV.match(line)
        if found_rev is not None:
            rev = _version(found_rev.group(1), found_rev.group(2))
            continue
        hook = _ID.match(line)
        tool = HOOKS.get(hook.group(1)) if hook is not None else None
        if tool is None:
            continue
        versions.setdefault(tool.package, rev)
        if tool.command not in checks:
            checks.append(tool.command)
    if not checks:
        return []
    packages = " ".join(
        shlex.quote(f"{name}=={version}" if version else name) for name, version in versions.items()
    )
    return [f"pip install {packages}", *checks]


_UNREACHABLE = re.compile(
    r"CONNECT tunnel failed, response [45]\d\d|from proxy after CONNECT|Could not resolve host"
)


def calls_pre_commit(command: str) -> bool:
    return re.search(r"(?:^|[\s/])pre-commit\s+run\b", command) is not None


def hooks_unreachable(text: str) -> bool:
    return _UNREACHABLE.search(text) is not None
