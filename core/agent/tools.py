"""The agent's repository tools; each call runs inside one activity against the task's checkout.

Drafts and analyses are kept in the object store under the task's prefix, so a later tool call
(possibly on another worker, after a crash) sees what an earlier one produced.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.agent.analysis import analyze_repository
from core.agent.git_checkout import default_branch
from core.agent.project_settings import BuildSettings, apply_build_settings
from core.agent.proposal import propose_pipeline
from core.agent.repo_files import RepoFiles
from forgeline.pipeline_spec import PipelineProposal, ValidationReport
from forgeline.pipeline_validation import validate_proposal
from infra.storage import ObjectNotFound, ObjectStore
from workflows.agent_models import AgentTaskInputData, Preferences, RepoAnalysis

MAX_READ_BYTES = 32 * 1024
MAX_LIST = 500
MAX_CONTENT_CHARS = 40_000
REPO_TOOLS = (
    "list_files",
    "read_file",
    "detect_framework",
    "propose_pipeline",
    "validate_pipeline",
)


PINNED_PREFERENCES = ("deploy_environment_id", "deploy_environment_name")


def pin_deploy_environment(proposal: PipelineProposal, prefs: Preferences) -> PipelineProposal:
    """Deploy stages of a model-written pipeline deploy only to the task's chosen environment."""
    stages = []
    for stage in proposal.stages:
        conditions = {k: v for k, v in stage.conditions.items() if k != "deploy_environment_id"}
        if stage.stage_type == "deploy" and prefs.deploy_environment_id is not None:
            conditions["deploy_environment_id"] = str(prefs.deploy_environment_id)
        stages.append(stage.model_copy(update={"conditions": conditions}))
    return proposal.model_copy(update={"stages": stages})


class ToolInputError(ValueError):
    """The model called a tool with arguments it does not accept (reported back, not retried)."""


@dataclass
class ToolResult:
    ok: bool
    content: str
    data: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    # validate_pipeline only: whether the current draft passed.
    valid: bool | None = None


def task_key(task_id: str, name: str) -> str:
    return f"agent/{task_id}/{name}"


def _content(payload: Any) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload, indent=1, default=str)
    if len(text) > MAX_CONTENT_CHARS:
        return text[:MAX_CONTENT_CHARS] + "\n... (truncated)"
    return text


class AgentToolbox:
    def __init__(
        self,
        root: Path,
        store: ObjectStore,
        task_id: str,
        input_data: AgentTaskInputData,
        project: BuildSettings | None = None,
    ) -> None:
        self.files = RepoFiles(root)
        self.store = store
        self.task_id = task_id
        self.input = input_data
        # The project's own build settings: they win over what the analysis detects.
        self.project = project or BuildSettings()

    def _analyze(self, framework_hint: str | None, app_path: str | None) -> RepoAnalysis:
        found = analyze_repository(
            self.files.root,
            framework_hint=framework_hint,
            app_path=app_path or self.project.root_directory,
        )
        return apply_build_settings(found, self.project)

    def run(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        handler = {
            "list_files": self.list_files,
            "read_file": self.read_file,
            "detect_framework": self.detect_framework,
            "propose_pipeline": self.propose_pipeline,
            "validate_pipeline": self.validate_pipeline,
        }.get(name)
        if handler is None:
            raise ToolInputError(f"unknown tool {name!r}; available: {', '.join(REPO_TOOLS)}")
        if not isinstance(arguments, dict):
            raise ToolInputError("tool input must be a JSON object")
        return handler(arguments)

    # --- storage ------------------------------------------------------------------------------

    def _put(self, name: str, model: Any) -> None:
        self.store.put_bytes(
            task_key(self.task_id, name), model.model_dump_json().encode(), "application/json"
        )

    def stored(self, name: str) -> bytes | None:
        try:
            return self.store.get_bytes(task_key(self.task_id, name))
        except (ObjectNotFound, FileNotFoundError):
            return None

    def analysis(self) -> RepoAnalysis:
        raw = self.stored("analysis.json")
        if raw is not None:
            return RepoAnalysis.model_validate_json(raw)
        result = self._analyze(self.input.framework_hint, self.input.app_path)
        self._put("analysis.json", result)
        return result

    # --- tools --------------------------------------------------------------------------------

    def list_files(self, args: dict[str, Any]) -> ToolResult:
        base = str(args.get("path") or ".").strip("/") or "."
        pattern = args.get("pattern")
        try:
            self.files.path(base)
        except ValueError as exc:
            raise ToolInputError(str(exc)) from None
        paths = [
            p
            for p in self.files.walk()
            if (base == "." or p.startswith(base + "/"))
            and (not pattern or fnmatch.fnmatch(p.rsplit("/", 1)[-1], str(pattern)))
        ]
        shown = paths[:MAX_LIST]
        more = f"\n... and {len(paths) - len(shown)} more" if len(paths) > len(shown) else ""
        return ToolResult(
            ok=True,
            content="\n".join(shown) + more,
            data={"count": len(paths)},
            summary=f"{len(paths)} files",
        )

    def read_file(self, args: dict[str, Any]) -> ToolResult:
        rel = args.get("path")
        if not isinstance(rel, str) or not rel:
            raise ToolInputError("read_file needs a 'path' string")
        try:
            target = self.files.path(rel)
        except ValueError as exc:
            raise ToolInputError(str(exc)) from None
        if not target.is_file():
            return ToolResult(ok=False, content=f"no such file: {rel}", summary="missing")
        with target.open("rb") as handle:
            raw = handle.read(MAX_READ_BYTES + 1)
        if b"\x00" in raw[:8192]:
            return ToolResult(ok=False, content=f"{rel} is a binary file", summary="binary")
        text = raw[:MAX_READ_BYTES].decode("utf-8", errors="replace")
        note = "\n... (truncated at 32 KB)" if len(raw) > MAX_READ_BYTES else ""
        return ToolResult(
            ok=True, content=_content(text + note), summary=f"{min(len(raw), MAX_READ_BYTES)} bytes"
        )

    def detect_framework(self, args: dict[str, Any]) -> ToolResult:
        hint = args.get("framework_hint") or self.input.framework_hint
        app_path = args.get("app_path") or self.input.app_path
        result = self._analyze(hint, app_path)
        self._put("analysis.json", result)
        primary = result.primary
        return ToolResult(
            ok=True,
            content=_content(result.model_dump(mode="json")),
            data={"framework": primary.framework, "confidence": primary.confidence},
            summary=f"{primary.framework} ({primary.confidence:.2f})"
            + (f", monorepo of {len(result.apps)} apps" if result.is_monorepo else ""),
        )

    def propose_pipeline(self, args: dict[str, Any]) -> ToolResult:
        raw_prefs = args.get("preferences")
        prefs = self.input.preferences
        if isinstance(raw_prefs, dict):
            # The deploy environment was checked against the task's project by the API: a
            # model's tool call cannot point a deploy somewhere else.
            chosen = {k: getattr(prefs, k) for k in PINNED_PREFERENCES}
            prefs = Preferences.model_validate({**prefs.model_dump(), **raw_prefs, **chosen})
        if args.get("pipeline") is not None:
            try:
                proposal = PipelineProposal.model_validate(args["pipeline"])
            except ValidationError as exc:
                raise ToolInputError(f"invalid pipeline: {exc.errors()[:5]}") from None
            proposal = pin_deploy_environment(proposal, prefs)
        else:
            branch = default_branch(self.files.root) or self.input.branch or "main"
            proposal = propose_pipeline(self.analysis(), prefs, default_branch=branch)
        self._put("draft.json", proposal)
        stages = [f"{s.name} ({s.stage_type})" for s in proposal.stages]
        return ToolResult(
            ok=True,
            content=_content(proposal.model_dump(mode="json")),
            data={"stages": len(proposal.stages)},
            summary=f"{len(stages)} stages: {', '.join(stages)}"[:500],
        )

    def draft(self) -> PipelineProposal | None:
        raw = self.stored("draft.json")
        return PipelineProposal.model_validate_json(raw) if raw is not None else None

    def validate_pipeline(self, args: dict[str, Any]) -> ToolResult:
        proposal = self.draft()
        if proposal is None:
            raise ToolInputError("no pipeline draft yet: call propose_pipeline first")
        report = validate_proposal(proposal)
        if report.valid:
            self.store.put_bytes(
                task_key(self.task_id, "validated.json"),
                json.dumps(
                    {"proposal": proposal.model_dump(mode="json"), "report": report.model_dump()}
                ).encode(),
                "application/json",
            )
            return ToolResult(
                ok=True,
                content="OK: valid GitHub Actions (actionlint) and GitLab CI (schema) YAML",
                summary="valid",
                valid=True,
            )
        return ToolResult(
            ok=True,
            content=_content({"valid": False, "errors": report.errors[:30]}),
            data={"errors": len(report.errors)},
            summary=f"{len(report.errors)} errors",
            valid=False,
        )

    def validated(self) -> tuple[PipelineProposal, ValidationReport] | None:
        raw = self.stored("validated.json")
        if raw is None:
            return None
        data = json.loads(raw)
        return (
            PipelineProposal.model_validate(data["proposal"]),
            ValidationReport.model_validate(data["report"]),
        )
