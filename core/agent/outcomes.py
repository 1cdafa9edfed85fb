"""Deterministic outputs of the non-generation task types: diagnosis of failed runs, suggestions.

These are the planner's honest fallbacks (rules over logs and manifests); with an LLM the model's
own summary is stored beside them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from core.agent.repo_files import RepoFiles
from forgeline.pipeline_spec import PipelineProposal
from workflows.agent_models import RepoAnalysis


@dataclass(frozen=True)
class FailureRule:
    pattern: str
    cause: str
    fix: str
    change: str | None = None  # "timeout", "retry", "memory", "image"


FAILURE_RULES: tuple[FailureRule, ...] = (
    FailureRule(
        r"npm ERR! Missing script: \"?([\w:-]+)|error Command \"([\w:-]+)\" not found",
        "the stage runs a package.json script that does not exist",
        "add the script to package.json or remove the command from the stage",
    ),
    FailureRule(
        r"npm ci` can only install|npm ci can only install|lockfile.*(?:out of date|needs to be "
        r"updated|not up to date)|--frozen-lockfile|ERR_PNPM_OUTDATED_LOCKFILE|uv\.lock.*needs",
        "the lockfile is out of sync with the manifest",
        "run the install locally and commit the updated lockfile",
    ),
    FailureRule(
        r"JavaScript heap out of memory|Killed|out of memory|ENOMEM|exit code 137",
        "the build ran out of memory",
        "raise the stage memory limit or set NODE_OPTIONS=--max-old-space-size=4096",
        "memory",
    ),
    FailureRule(
        r"timed out|deadline exceeded|Timeout",
        "the stage hit its timeout",
        "raise timeout_seconds (proposed: double it) or cache dependencies",
        "timeout",
    ),
    FailureRule(
        r"Could not resolve host|Temporary failure in name resolution|ETIMEDOUT|ECONNRESET|"
        r"EAI_AGAIN|network is unreachable",
        "a network call failed (registry or download)",
        "retry the stage (proposed: 2 retries) and make sure the stage has network access",
        "retry",
    ),
    FailureRule(
        r"ModuleNotFoundError: No module named '([^']+)'|Cannot find module '([^']+)'",
        "a dependency is missing from the manifest",
        "add the missing package to the dependencies and commit the lockfile",
    ),
    FailureRule(
        r"command not found|executable file not found|not found in \$PATH",
        "a tool the stage calls is not installed in its image",
        "use an image that ships the tool or install it first in the stage",
        "image",
    ),
    FailureRule(
        r"\b\d+ (?:failed|failing)\b|FAILED|AssertionError|Tests:\s+\d+ failed|--- FAIL",
        "tests failed",
        "fix the failing tests; the pipeline itself is fine",
    ),
    FailureRule(
        r"SyntaxError|TS\d{4}:|error\[E\d{4}\]|cannot find symbol|compilation failed",
        "the code does not compile",
        "fix the compile errors shown in the log",
    ),
    FailureRule(
        r"[Pp]ermission denied|EACCES",
        "a file or directory is not writable/executable in the stage",
        "check file modes (chmod +x for scripts) and the working directory",
    ),
)


def diagnose(run_logs: dict[str, Any], proposal: PipelineProposal | None) -> dict[str, Any]:
    """Match failed stages' logs against known failure shapes; propose one pipeline change."""
    diagnoses: list[dict[str, Any]] = []
    change: dict[str, Any] | None = None
    for stage in run_logs.get("failed_stages", []):
        text = f"{stage.get('error') or ''}\n{stage.get('log_tail') or ''}"
        if stage.get("status") == "timed_out":
            text += "\ntimed out"
        if stage.get("exit_code") == 137:
            text += "\nexit code 137"
        rule = next((r for r in FAILURE_RULES if re.search(r.pattern, text)), None)
        evidence = _evidence(text, rule.pattern if rule else None)
        diagnoses.append(
            {
                "stage": stage.get("stage_name"),
                "exit_code": stage.get("exit_code"),
                "cause": rule.cause if rule else "unrecognised failure",
                "fix": rule.fix if rule else "read the log tail below; no known pattern matched",
                "evidence": evidence,
            }
        )
        if change is None and rule and rule.change:
            change = _change_for(rule.change, stage)
    return {
        "pipeline_run_id": run_logs.get("pipeline_run_id"),
        "run_status": run_logs.get("status"),
        "failed_stages": [d["stage"] for d in diagnoses],
        "diagnosis": diagnoses,
        "proposed_change": change,
        "summary": "; ".join(f"{d['stage']}: {d['cause']}" for d in diagnoses)
        or "no failed stage found in this run",
    }


def _evidence(text: str, pattern: str | None) -> list[str]:
    lines = [line for line in text.splitlines() if line.strip()]
    if pattern:
        hits = [line for line in lines if re.search(pattern, line)]
        if hits:
            return hits[:5]
    return lines[-5:]


def _change_for(kind: str, stage: dict[str, Any]) -> dict[str, Any]:
    name = stage.get("stage_name")
    timeout = int(stage.get("timeout_seconds") or 600)
    if kind == "timeout":
        return {"stage": name, "field": "timeout_seconds", "from": timeout, "to": timeout * 2}
    if kind == "retry":
        return {"stage": name, "field": "retry_count", "from": 0, "to": 2}
    if kind == "memory":
        return {
            "stage": name,
            "field": "environment",
            "set": {"NODE_OPTIONS": "--max-old-space-size=4096"},
        }
    return {"stage": name, "field": "image", "note": "pick an image that ships the missing tool"}


def existing_ci(files: RepoFiles) -> list[str]:
    found = [
        p
        for p in files.walk()
        if p.startswith(".github/workflows/") and p.endswith((".yml", ".yaml"))
    ]
    found += [p for p in (".gitlab-ci.yml", ".circleci/config.yml") if files.exists(p)]
    return found


def suggestions(
    analysis: RepoAnalysis, files: RepoFiles, proposal: PipelineProposal | None
) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def add(title: str, detail: str, impact: str = "medium") -> None:
        out.append({"title": title, "detail": detail, "impact": impact})

    ci = existing_ci(files)
    ci_text = "\n".join(files.text(p) or "" for p in ci)
    if not ci:
        add("Adopt a CI pipeline", "No CI configuration found; use the generated pipeline.", "high")
    elif "cache" not in ci_text:
        add("Cache dependencies", f"{', '.join(ci)} installs dependencies without a cache.", "high")
    for app in analysis.apps:
        where = f"{app.name} ({app.path})"
        if app.package_manager and not app.lockfiles and app.framework not in ("static",):
            add("Commit a lockfile", f"{where}: installs are not reproducible without one.", "high")
        if not app.test_command and app.framework not in ("static", "dockerfile", "unknown"):
            add("Add automated tests", f"{where}: no test command was found.", "high")
        if not app.lint_command and app.framework not in ("unknown",):
            add("Add a linter", f"{where}: no lint command was found.")
        if not app.has_dockerfile and app.framework in (
            "express",
            "django",
            "flask",
            "fastapi",
            "rails",
            "laravel",
            "spring-boot",
            "go",
        ):
            add("Add a Dockerfile", f"{where}: a server app deploys reproducibly as an image.")
    if analysis.is_monorepo:
        add(
            "Build apps in parallel",
            "Each app has its own lint/test/build jobs that run in parallel after one install.",
        )
    if proposal is not None:
        parallel = [s.name for s in proposal.stages if s.stage_type in ("lint", "test")]
        if len(parallel) >= 2:
            add(
                "Run checks in parallel",
                f"{', '.join(parallel)} only depend on the install stage and run side by side.",
                "low",
            )
    return out
