"""The built-in planner as an agent: scripted turns that call the same tools an LLM would.

Running the planner through tool activities records steps and invocations exactly like the LLM
path, so the API, the Temporal UI and the tests see one shape of execution.
"""

from __future__ import annotations

from typing import Any

from workflows.agent_models import PlannerTurnOutput, ToolActivityOutput, ToolCall

MANIFESTS = (
    "package.json",
    "pnpm-workspace.yaml",
    "pyproject.toml",
    "requirements.txt",
    "go.mod",
    "Cargo.toml",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
    "Gemfile",
    "composer.json",
    "Dockerfile",
    "index.html",
)
CI_FILES_PREFIXES = (".github/workflows/", ".gitlab-ci.yml", ".circleci/config.yml")
MAX_READS = 4

# task type -> ordered phases; each phase is one planner turn.
PHASES: dict[str, tuple[str, ...]] = {
    "generate_pipeline": ("list", "read", "detect", "propose", "validate"),
    "analyze_repo": ("list", "read", "detect"),
    "optimize_config": ("list", "read", "detect", "propose", "validate"),
    "troubleshoot_failure": ("logs", "list", "detect", "propose", "validate"),
    "suggest_improvements": ("list", "read", "detect"),
}
DESCRIPTIONS = {
    "list": "List the repository files",
    "read": "Read manifests, lockfiles and existing CI configuration",
    "detect": "Detect frameworks, package managers and commands",
    "propose": "Propose a pipeline from the analysis and the preferences",
    "validate": "Validate the pipeline as GitHub Actions and GitLab CI YAML",
    "logs": "Read the failed run's stage logs",
}


def _files_to_read(listing: str, task_type: str) -> list[str]:
    paths = [line for line in listing.splitlines() if line and not line.startswith("...")]
    picked = [p for p in paths if p.count("/") <= 2 and p.rsplit("/", 1)[-1] in MANIFESTS]
    picked.sort(key=lambda p: (p.count("/"), p))
    chosen = picked[:MAX_READS]
    if task_type in ("optimize_config", "suggest_improvements"):
        chosen += [p for p in paths if p.startswith(CI_FILES_PREFIXES)][:2]
    return chosen


def planner_turn(
    *,
    task_type: str,
    input_data: dict[str, Any],
    state: dict[str, Any],
    tool_results: list[ToolActivityOutput],
) -> PlannerTurnOutput:
    phases = PHASES[task_type]
    phase_index = int(state.get("phase", 0))
    new_state = dict(state)
    if tool_results and tool_results[0].name == "list_files":
        new_state["listing"] = tool_results[0].content
    if phase_index >= len(phases):
        return PlannerTurnOutput(planner_state=new_state, done=True, text=_closing(tool_results))
    phase = phases[phase_index]
    new_state["phase"] = phase_index + 1
    prefix = f"p{phase_index}"
    calls: list[ToolCall] = []
    if phase == "list":
        calls = [ToolCall(call_id=f"{prefix}-0", name="list_files", arguments={})]
    elif phase == "read":
        reads = _files_to_read(str(new_state.get("listing", "")), task_type)
        calls = [
            ToolCall(call_id=f"{prefix}-{i}", name="read_file", arguments={"path": path})
            for i, path in enumerate(reads)
        ]
    elif phase == "detect":
        args = {k: input_data[k] for k in ("framework_hint", "app_path") if input_data.get(k)}
        calls = [ToolCall(call_id=f"{prefix}-0", name="detect_framework", arguments=args)]
    elif phase == "propose":
        prefs = input_data.get("preferences") or {}
        calls = [
            ToolCall(
                call_id=f"{prefix}-0", name="propose_pipeline", arguments={"preferences": prefs}
            )
        ]
    elif phase == "validate":
        calls = [ToolCall(call_id=f"{prefix}-0", name="validate_pipeline", arguments={})]
    elif phase == "logs":
        run_id = input_data.get("pipeline_run_id")
        calls = [
            ToolCall(
                call_id=f"{prefix}-0",
                name="read_run_logs",
                arguments={"pipeline_run_id": str(run_id) if run_id else ""},
            )
        ]
    if not calls:  # e.g. nothing to read: skip the phase but keep the turn numbering simple
        return planner_turn(
            task_type=task_type, input_data=input_data, state=new_state, tool_results=[]
        )
    return PlannerTurnOutput(planner_state=new_state, text=DESCRIPTIONS[phase], tool_calls=calls)


def _closing(tool_results: list[ToolActivityOutput]) -> str:
    last = tool_results[-1].content if tool_results else ""
    return "Planner finished. " + (last[:200] if last else "")
