"""Deterministic outputs of the non-generation task types: diagnosis of failed runs, suggestions.

These are the planner's honest fallbacks (rules over logs and manifests); with an LLM the model's
own summary is stored beside them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from core.agent.repo_files import RepoFiles
from core.agent.submodules import Submodule, declared_submodules, missing_submodule
from core.runs.failure_classes import (
    GENERIC_CAUSE,
    MAX_EVIDENCE,
    FailureClassification,
    FailureSignals,
    classify,
    tail_lines,
)
from forgeline.pipeline_spec import PipelineProposal
from forgeline.statuses.runs import FailureClass
from workflows.agent_models import RepoAnalysis


@dataclass(frozen=True)
class FailureFix:
    """What to do about a failure whose cause matches `cause` (within its class)."""

    failure_class: FailureClass
    cause: str
    fix: str
    change: str | None = None  # "timeout", "retry", "memory", "image"


FIXES: tuple[FailureFix, ...] = (
    FailureFix(
        FailureClass.CONFIG,
        r"script that does not exist",
        "add the script to package.json or remove the command from the stage",
    ),
    FailureFix(
        FailureClass.CONFIG,
        r"lockfile is out of sync",
        "run the install locally and commit the updated lockfile",
    ),
    FailureFix(
        FailureClass.CONFIG,
        r"needs a lockfile",
        "install without the lockfile-only command (npm install) or commit a lockfile",
    ),
    FailureFix(
        FailureClass.CONFIG,
        r"not installed in its image|not found \(exit 127\)",
        "use an image that ships the tool or install it first in the stage",
        "image",
    ),
    FailureFix(
        FailureClass.CONFIG,
        r"network does not reach",
        "run the tools the repository configures from the package registries instead of "
        "fetching them from the unreachable host (e.g. the linters pre-commit would clone)",
    ),
    FailureFix(
        FailureClass.CONFIG,
        r"version of a tool",
        "pin the tool to the release the repository's configuration was written for",
    ),
    FailureFix(
        FailureClass.CONFIG,
        r"submodule",
        "check out the repository's git submodules (reachable from the build network) "
        "before the stage",
    ),
    FailureFix(
        FailureClass.CONFIG,
        r"service the stage does not start",
        "give the stage the service (services:) or run the tests against an embedded database",
    ),
    FailureFix(
        FailureClass.CONFIG,
        r"does not exist|not executable",
        "check the stage's working directory, the script's path and its file mode",
    ),
    FailureFix(
        FailureClass.CONFIG,
        r"timeout",
        "raise timeout_seconds (proposed: double it) or cache dependencies",
        "timeout",
    ),
    FailureFix(
        FailureClass.CONFIG,
        r"log limit",
        "raise the pipeline's limits.log_max_bytes or make the step less verbose",
    ),
    FailureFix(
        FailureClass.CONFIG,
        r"disk limit|artifact limits",
        "raise the pipeline's limits or keep caches and artifacts smaller",
    ),
    FailureFix(
        FailureClass.INFRASTRUCTURE,
        r"memory",
        "raise the stage memory limit or set NODE_OPTIONS=--max-old-space-size=4096",
        "memory",
    ),
    FailureFix(
        FailureClass.INFRASTRUCTURE,
        r"network|DNS|registry|host name",
        "retry the stage (proposed: 2 retries) and make sure the stage has network access",
        "retry",
    ),
    FailureFix(
        FailureClass.FLAKY,
        r"",
        "retry the stage (proposed: 2 retries); make the test independent of timing and ports",
        "retry",
    ),
    FailureFix(
        FailureClass.CODE,
        r"module the code imports",
        "add the missing package to the dependencies and commit the lockfile",
    ),
    FailureFix(
        FailureClass.CODE,
        r"compile",
        "fix the compile errors shown in the log",
    ),
    FailureFix(
        FailureClass.CODE,
        r"",
        "fix the failing tests or checks shown in the evidence; the pipeline itself is fine",
    ),
    FailureFix(
        FailureClass.INFRASTRUCTURE,
        r"",
        "run the stage again; the runner or the host failed, not the pipeline",
        "retry",
    ),
    FailureFix(
        FailureClass.CONFIG,
        r"",
        "repair the stage's command, image or setup as the evidence shows",
    ),
)


def classification(stage: dict[str, Any]) -> FailureClassification:
    """The stage's failure as its attempt recorded it (the runner saw what a log cannot show:
    a lost worker, an OOM kill), unless the record is the generic fallback and the log says
    more; a specific cause is never replaced by a generic one."""
    status = stage.get("status")
    exit_code = stage.get("exit_code")
    read = classify(
        FailureSignals(
            exit_code=exit_code if isinstance(exit_code, int) else None,
            timed_out=status == "timed_out",
            log_tail=str(stage.get("log_tail") or ""),
        )
    )
    recorded_class = stage.get("failure_class")
    if recorded_class not in set(FailureClass):
        return read
    recorded = FailureClassification(
        FailureClass(recorded_class),
        str(stage.get("failure_cause") or read.cause),
        [str(line) for line in _lines(stage.get("failure_evidence"))][:MAX_EVIDENCE]
        or read.evidence,
    )
    if is_generic(recorded) and not is_generic(read):
        return read
    return recorded


def with_checkout(
    found: FailureClassification, stage: dict[str, Any], submodules: list[Submodule]
) -> FailureClassification:
    """A failure blamed on the code that is a file of a submodule the checkout lacks."""
    if found.failure_class != FailureClass.CODE or not submodules:
        return found
    lines = [*found.evidence, *tail_lines(str(stage.get("log_tail") or ""))]
    missing = missing_submodule(submodules, lines)
    if missing is None:
        return found
    return FailureClassification(FailureClass.CONFIG, missing[0], missing[1])


def _lines(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def is_generic(found: FailureClassification) -> bool:
    return found.cause.endswith(GENERIC_CAUSE)


def diagnose(
    run_logs: dict[str, Any], proposal: PipelineProposal | None, files: RepoFiles | None = None
) -> dict[str, Any]:
    """Each failed stage's failure class, cause and evidence lines; one pipeline change proposed.
    `files`: the checkout, for what a log alone cannot tell (a declared submodule it lacks)."""
    diagnoses: list[dict[str, Any]] = []
    change: dict[str, Any] | None = None
    submodules = declared_submodules(files.text(".gitmodules")) if files is not None else []
    for stage in run_logs.get("failed_stages", []):
        found = with_checkout(classification(stage), stage, submodules)
        fix = next(
            f
            for f in FIXES
            if f.failure_class == found.failure_class and re.search(f.cause, found.cause)
        )
        diagnoses.append(
            {
                "stage": stage.get("stage_name"),
                "exit_code": stage.get("exit_code"),
                "failure_class": str(found.failure_class),
                "cause": found.cause,
                "fix": fix.fix,
                "evidence": found.evidence,
            }
        )
        if change is None and fix.change:
            change = _change_for(fix.change, stage)
    return {
        "pipeline_run_id": run_logs.get("pipeline_run_id"),
        "run_status": run_logs.get("status"),
        "failed_stages": [d["stage"] for d in diagnoses],
        "diagnosis": diagnoses,
        "proposed_change": change,
        "summary": "; ".join(
            f"{d['stage']}: {d['cause']} ({d['failure_class']})" for d in diagnoses
        )
        or "no failed stage found in this run",
    }


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
