"""The toolchain versions a repository already tests against: its CI config's matrix (GitHub
Actions, Travis), tox's envlist and nox's sessions. Only versions the generator has images for
are kept; a matrix needs at least two."""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterable
from typing import Any

from core.agent.repo_files import RepoFiles, join
from core.agent.versions import NODE_MAJORS, PYTHON_VERSIONS

MAX_WORKFLOW_FILES = 20
MAX_VALUES = 12
# Matrix keys of GitHub Actions workflows and Travis for each toolchain.
MATRIX_KEYS = {
    "python": ("python-version", "python", "python_version", "py"),
    "node": ("node-version", "node", "node_version", "nodejs"),
}
TRAVIS_KEYS = {"python": "python", "node": "node_js"}
LANGUAGE_TOOLCHAIN = {"python": "python", "javascript": "node", "typescript": "node"}


def _python_value(value: Any) -> str | None:
    text = str(value).strip().removeprefix("pypy").removeprefix("cpython-")
    match = re.fullmatch(r"(3\.\d{1,2})(?:\.\d+|\.x)?", text)
    return match.group(1) if match and match.group(1) in PYTHON_VERSIONS else None


def _node_value(value: Any) -> str | None:
    match = re.fullmatch(r"v?(\d{1,2})(?:\.x|\.\d+(?:\.\d+)?)?", str(value).strip())
    return match.group(1) if match and int(match.group(1)) in NODE_MAJORS else None


NORMALISE = {"python": _python_value, "node": _node_value}


def _sorted(toolchain: str, values: Iterable[str]) -> list[str]:
    unique = set(values)
    if toolchain == "python":
        return [v for v in PYTHON_VERSIONS if v in unique][:MAX_VALUES]
    return [str(m) for m in NODE_MAJORS if str(m) in unique][:MAX_VALUES]


def _as_list(value: Any) -> list[Any]:
    return (
        value
        if isinstance(value, list)
        else ([value] if isinstance(value, str | int | float) else [])
    )


def _github_matrix(files: RepoFiles, toolchain: str) -> list[str]:
    keys = MATRIX_KEYS[toolchain]
    found: list[str] = []
    workflows = [
        f
        for f in files.walk()
        if f.startswith(".github/workflows/") and f.endswith((".yml", ".yaml"))
    ][:MAX_WORKFLOW_FILES]
    for rel in workflows:
        jobs = (files.yaml(rel) or {}).get("jobs")
        for job in (jobs or {}).values() if isinstance(jobs, dict) else []:
            strategy = job.get("strategy") if isinstance(job, dict) else None
            matrix = strategy.get("matrix") if isinstance(strategy, dict) else None
            if not isinstance(matrix, dict):
                continue
            for key in keys:
                found.extend(str(v) for v in _as_list(matrix.get(key)))
            for extra in _as_list(matrix.get("include")):
                if isinstance(extra, dict):
                    found.extend(str(extra[k]) for k in keys if k in extra)
    return found


def _travis(files: RepoFiles, toolchain: str) -> list[str]:
    travis = files.yaml(".travis.yml") or {}
    return [str(v) for v in _as_list(travis.get(TRAVIS_KEYS[toolchain]))]


def _expand_braces(env: str) -> list[str]:
    """tox's generative names: py{38,39}-django{3,4} -> py38-django3, py38-django4, ..."""
    match = re.search(r"\{([^{}]{0,200})\}", env)
    if match is None:
        return [env]
    out: list[str] = []
    for choice in match.group(1).split(",")[:MAX_VALUES]:
        out.extend(_expand_braces(env[: match.start()] + choice.strip() + env[match.end() :]))
        if len(out) > 200:
            break
    return out


def _tox_envs(files: RepoFiles, base: str) -> list[str]:
    texts: list[str] = []
    for name in ("tox.ini", "setup.cfg"):
        raw = files.text(join(base, name))
        if raw:
            texts.append(raw)
    pyproject = files.toml(join(base, "pyproject.toml")) or {}
    tox = (pyproject.get("tool") or {}).get("tox") or {}
    if isinstance(tox, dict) and isinstance(tox.get("legacy_tox_ini"), str):
        texts.append(tox["legacy_tox_ini"])
    tox_toml = files.toml(join(base, "tox.toml")) or {}
    envs: list[str] = []
    for table in (tox, tox_toml):
        if isinstance(table, dict):
            envs.extend(str(e) for e in _as_list(table.get("env_list") or table.get("envlist")))
    for text in texts:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read_string(text)
        except configparser.Error:
            continue
        section = "tox" if parser.has_section("tox") else "tox:tox"
        if parser.has_section(section):
            raw = parser.get(section, "envlist", fallback="") or parser.get(
                section, "env_list", fallback=""
            )
            # Commas inside braces belong to the generative name.
            envs.extend(re.findall(r"[^,\s{]*(?:\{[^}]*\}[^,\s{]*)*", raw))
    return [e for env in envs if env for e in _expand_braces(env)]


def _tox_python(files: RepoFiles, base: str) -> list[str]:
    found: list[str] = []
    for env in _tox_envs(files, base):
        for factor in env.split("-"):
            match = re.fullmatch(r"py(3)\.?(\d{1,2})|(3\.\d{1,2})", factor)
            if match:
                found.append(match.group(3) or f"3.{match.group(2)}")
    return found


def _nox_python(files: RepoFiles, base: str) -> list[str]:
    text = files.text(join(base, "noxfile.py")) or ""
    found: list[str] = []
    for match in re.finditer(r"python(?:s|_versions?)?\s*=\s*\[([^\]]{0,400})\]", text, re.I):
        found.extend(re.findall(r"['\"](3\.\d{1,2})['\"]", match.group(1)))
    return found


def declared_matrix(files: RepoFiles, base: str, language: str) -> list[str]:
    """The versions of the app's toolchain its own CI, tox or nox already runs (>= 2), else []."""
    toolchain = LANGUAGE_TOOLCHAIN.get(language)
    if toolchain is None:
        return []
    normalise = NORMALISE[toolchain]
    sources: list[list[str]] = [_github_matrix(files, toolchain), _travis(files, toolchain)]
    if toolchain == "python":
        sources += [_tox_python(files, base), _nox_python(files, base)]
    for raw in sources:
        versions = _sorted(toolchain, (v for v in map(normalise, raw) if v))
        if len(versions) >= 2:
            return versions
    return []
