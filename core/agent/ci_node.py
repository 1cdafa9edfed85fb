"""The Node versions a repository's own CI runs (GitHub Actions: `actions/setup-node`'s
`node-version`, and the `node-version` / `node` / `node_version` / `nodejs` values of a job's
matrix and its `include` entries; Travis' `node_js`), and the newest of them: what its
maintainers know their install, lint and tests pass on. The minor a workflow pins is kept
(`"22.0"` is Node 22.0, not the newest 22: a 22.12+ loads ES modules through `require`, which
an old `v8-compile-cache` in an eslint 6 toolchain cannot compile).
"""

from __future__ import annotations

import re
from typing import Any

from core.agent.repo_files import RepoFiles

MAX_WORKFLOW_FILES = 20
MAX_VALUES = 200
MATRIX_KEYS = ("node-version", "node", "node_version", "nodejs")
# Majors older than this are not offered by the runners' Node toolchains.
OLDEST_MAJOR = 10


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value[:MAX_VALUES]
    return [value] if isinstance(value, str | int | float) else []


def _workflow_values(workflow: Any) -> list[str]:
    jobs = workflow.get("jobs") if isinstance(workflow, dict) else None
    found: list[str] = []
    for job in list(jobs.values())[:MAX_VALUES] if isinstance(jobs, dict) else []:
        if not isinstance(job, dict):
            continue
        strategy = job.get("strategy")
        matrix = strategy.get("matrix") if isinstance(strategy, dict) else None
        if isinstance(matrix, dict):
            for key in MATRIX_KEYS:
                found.extend(str(v) for v in _as_list(matrix.get(key)))
            for extra in _as_list(matrix.get("include")):
                if isinstance(extra, dict):
                    found.extend(str(extra[k]) for k in MATRIX_KEYS if k in extra)
        steps = job.get("steps")
        for step in steps[:MAX_VALUES] if isinstance(steps, list) else []:
            given = step.get("with") if isinstance(step, dict) else None
            uses = str(step.get("uses") or "") if isinstance(step, dict) else ""
            if uses.startswith("actions/setup-node") and isinstance(given, dict):
                found.extend(str(v) for v in _as_list(given.get("node-version")))
    return found


def ci_node_values(files: RepoFiles) -> list[str]:
    """Every literal Node version the CI configs name (expressions and aliases left out)."""
    workflows = [
        f
        for f in files.walk()
        if f.startswith(".github/workflows/") and f.endswith((".yml", ".yaml"))
    ][:MAX_WORKFLOW_FILES]
    raw: list[str] = []
    for rel in workflows:
        raw.extend(_workflow_values(files.yaml(rel)))
    travis = files.yaml(".travis.yml")
    if isinstance(travis, dict):
        raw.extend(str(v) for v in _as_list(travis.get("node_js")))
    return [tag for tag in (ci_node_tag(v) for v in raw[:MAX_VALUES]) if tag is not None]


def ci_node_tag(value: str) -> str | None:
    """The image tag of one literal version: `22.0` -> 22.0, `v18.17.1` -> 18.17.1, `14.x` ->
    14; None for expressions, aliases (lts/*), ranges and majors before OLDEST_MAJOR."""
    text = value.strip().lower().removeprefix("v")
    match = re.fullmatch(r"(\d{1,2})(?:\.(x|\d{1,3}))?(?:\.(x|\d{1,3}))?", text)
    if match is None or int(match.group(1)) < OLDEST_MAJOR:
        return None
    parts = [p for p in match.groups() if p is not None and p != "x"]
    if match.group(2) == "x":
        parts = parts[:1]
    return ".".join(parts)


def _key(tag: str) -> tuple[int, ...]:
    return tuple(int(p) for p in tag.split("."))


def newest_ci_node(files: RepoFiles, newest_major: int) -> str | None:
    """The newest version the CI runs, no newer than `newest_major` (the newest Node the
    generator knows: a CI also testing tomorrow's odd release does not make it the build's)."""
    tags = [t for t in ci_node_values(files) if _key(t)[0] <= newest_major]
    if not tags:
        return None
    # Among equal versions the most precise (22.0 beside 22 keeps 22.0: it is what ran).
    return max(tags, key=lambda t: (_key(t)[0], len(_key(t)) > 1, _key(t)))
