"""The one toolchain version a repository's GitHub Actions workflows set up (`actions/setup-python`
with `python-version: "3.9"`): what its maintainers build with when nothing else pins it. A
matrix expression or several different versions pin nothing here (core/agent/matrix.py reads
matrices)."""

from __future__ import annotations

from typing import Any

from core.agent.repo_files import RepoFiles

MAX_WORKFLOW_FILES = 20
SETUP_ACTIONS = {"python-version": "actions/setup-python", "node-version": "actions/setup-node"}


def _steps(workflow: Any) -> list[dict[str, Any]]:
    jobs = workflow.get("jobs") if isinstance(workflow, dict) else None
    out: list[dict[str, Any]] = []
    for job in jobs.values() if isinstance(jobs, dict) else []:
        steps = job.get("steps") if isinstance(job, dict) else None
        out.extend(s for s in steps or [] if isinstance(s, dict))
    return out


def ci_setup_version(files: RepoFiles, key: str) -> str | None:
    """The single literal `key` (python-version, node-version) the workflows' setup steps give,
    or None (none, an expression, or more than one version)."""
    action = SETUP_ACTIONS[key]
    workflows = [
        f
        for f in files.walk()
        if f.startswith(".github/workflows/") and f.endswith((".yml", ".yaml"))
    ][:MAX_WORKFLOW_FILES]
    found: set[str] = set()
    for rel in workflows:
        for step in _steps(files.yaml(rel)):
            uses = str(step.get("uses") or "")
            given = (step.get("with") or {}) if isinstance(step.get("with"), dict) else {}
            if not uses.startswith(action) or key not in given:
                continue
            value = str(given[key]).strip()
            if not value or "${{" in value or len(value) > 40:
                return None
            found.add(value)
    return found.pop() if len(found) == 1 else None
