"""The git submodules a repository declares (`.gitmodules`), read as text and never fetched here,
and whether a failure's evidence is a submodule the checkout does not hold: the pipeline's
fault (config), not the repository's code."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.runs.failure_classes import clean_line

# A .gitmodules larger than this is not a real one: read no further.
MAX_GITMODULES_CHARS = 64 * 1024
MAX_SUBMODULES = 50
_SECTION = re.compile(r'^\s*\[submodule\s+"([^"\n]{1,300})"\s*\]\s*$')
_KEY = re.compile(r"^\s*(path|url)\s*=\s*(.{1,1000}?)\s*$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._@+-][A-Za-z0-9._@+/-]{0,299}$")
_MISSING = re.compile(
    r"No such file or directory|FileNotFoundError|ENOENT|not found|does not exist|cannot find",
    re.I,
)


@dataclass(frozen=True)
class Submodule:
    path: str
    url: str


def declared_submodules(text: str | None) -> list[Submodule]:
    """The submodules of a .gitmodules text, with safe relative paths only (no `..`, no
    absolute path, no control characters); garbage lines are ignored."""
    if not text:
        return []
    found: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text[:MAX_GITMODULES_CHARS].splitlines():
        section = _SECTION.match(line)
        if section is not None:
            if len(found) >= MAX_SUBMODULES:
                break
            current = found.setdefault(section.group(1), {})
            continue
        key = _KEY.match(line)
        if key is not None and current is not None:
            current[key.group(1)] = key.group(2)
    out: list[Submodule] = []
    for entry in found.values():
        path = entry.get("path", "").strip().rstrip("/")
        if not _SAFE_PATH.match(path) or ".." in path.split("/"):
            continue
        out.append(Submodule(path=path, url=entry.get("url", "")))
    return out


def missing_submodule(
    submodules: list[Submodule], lines: list[str]
) -> tuple[str, list[str]] | None:
    """The cause and evidence when a log line says a file under a declared submodule's path is
    missing (the checkout does not hold the submodule), else None."""
    for sub in submodules:
        marker = re.compile(rf"(?:^|[\s'\"/(]){re.escape(sub.path)}(?:/|['\"\s:)]|$)")
        evidence = [
            clean_line(line)
            for line in lines
            if _MISSING.search(line[:2000]) and marker.search(line[:2000])
        ]
        if evidence:
            return (
                f"the repository's git submodule {sub.path} is not checked out (the checkout "
                "does not fetch submodules, or their host is outside the build network)",
                evidence[-5:],
            )
    return None
