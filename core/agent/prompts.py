"""What the model is told: the system prompt, each task type's goal and the tools it may call."""

from __future__ import annotations

import json
from typing import Any

from forgeline.statuses.agent import AgentTaskType

SYSTEM_PROMPT = """You are Forgeline's CI/CD agent. You inspect one git repository through tools \
and produce a correct, runnable pipeline (install, lint, test, build, security_scan, deploy).
Always ground decisions in files you listed or read. Use detect_framework early. For pipeline \
work call propose_pipeline and then validate_pipeline until it reports OK. Keep the deploy \
stage propose_pipeline gives: Forgeline itself deploys after it succeeds, so it needs no API \
credentials. Be concise; when done, answer with a short summary and no tool call."""

GOALS: dict[AgentTaskType, str] = {
    AgentTaskType.GENERATE_PIPELINE: (
        "Generate a CI/CD pipeline for this repository and validate it."
    ),
    AgentTaskType.ANALYZE_REPO: (
        "Analyse the repository: apps, frameworks, package managers, commands."
    ),
    AgentTaskType.OPTIMIZE_CONFIG: (
        "Propose an optimised pipeline (caching, parallel jobs) and validate it; list the "
        "optimisations."
    ),
    AgentTaskType.TROUBLESHOOT_FAILURE: (
        "Read the failed run's logs (read_run_logs), diagnose the cause and propose a pipeline "
        "change."
    ),
    AgentTaskType.SUGGEST_IMPROVEMENTS: (
        "Suggest concrete improvements to the repository's build, tests and CI."
    ),
}


def task_prompt(task_type: AgentTaskType, input_data: dict[str, Any]) -> str:
    """The first user message of a conversation."""
    goal = GOALS[task_type] + (VERIFY_PROMPT if verifies(task_type, input_data) else "")
    return f"Task: {task_type}. {goal}\nInput: {json.dumps(input_data, default=str)[:4000]}"


TOOL_SCHEMAS: list[dict[str, Any]] = [
    {
        "name": "list_files",
        "description": "List repository files (paths relative to the root), optionally under a "
        "directory and filtered by a glob such as '*.json'. At most 500 paths.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Directory, default the root."},
                "pattern": {"type": "string", "description": "fnmatch glob on the file name."},
            },
        },
    },
    {
        "name": "read_file",
        "description": "Read one text file of the repository (first 32 KB at most).",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
        },
    },
    {
        "name": "detect_framework",
        "description": "Run Forgeline's manifest/lockfile analyser: apps, frameworks with "
        "confidence, package manager, install/lint/test/build commands, output directory.",
        "input_schema": {
            "type": "object",
            "properties": {
                "framework_hint": {"type": "string"},
                "app_path": {"type": "string"},
            },
        },
    },
    {
        "name": "propose_pipeline",
        "description": "Store a pipeline draft. Pass `pipeline` (name, pipeline_type, framework, "
        "triggers, stages[name, stage_type in install|lint|test|build|security_scan|deploy, "
        "commands, image, working_directory, conditions, timeout_seconds, depends_on, "
        "cache_paths, artifact_paths, env]) or omit it to get the analyser's proposal for the "
        "given preferences.",
        "input_schema": {
            "type": "object",
            "properties": {
                "pipeline": {"type": "object"},
                "preferences": {"type": "object"},
            },
        },
    },
    {
        "name": "validate_pipeline",
        "description": "Validate the current draft: export to GitHub Actions (actionlint) and "
        "GitLab CI (JSON schema). Returns errors to fix, or OK.",
        "input_schema": {"type": "object", "properties": {}},
    },
    {
        "name": "read_run_logs",
        "description": "Failed stages of a pipeline run of this project with the end of their "
        "logs (for troubleshooting).",
        "input_schema": {
            "type": "object",
            "properties": {"pipeline_run_id": {"type": "string"}},
            "required": ["pipeline_run_id"],
        },
    },
]

VERIFY_PROMPT = (
    " Then prove it runs: run_pipeline runs the validated pipeline on the repository's commit "
    "(deploy stages skipped). When a stage fails, read_stage_log shows its log; when the failure "
    "is the pipeline's fault (a command, image, setup step, service or cache path) repair it with "
    "patch_stage and call run_pipeline again, which reruns from the failed stage. When the "
    "repository's own tests or build fail, do not hide it: stop and say so."
)

VERIFY_TOOL_SCHEMAS: list[dict[str, Any]] = [
    {
        "name": "run_pipeline",
        "description": "Run the validated pipeline on the repository's commit (a verification "
        "run; after a failed one it reruns from the failed stage). Returns green, or the failed "
        "stage with its failure class, cause and evidence lines.",
        "input_schema": {"type": "object", "properties": {}},
    },
    {
        "name": "read_stage_log",
        "description": "The end of a stage's log in a verification run (by default the latest).",
        "input_schema": {
            "type": "object",
            "properties": {
                "stage": {"type": "string"},
                "pipeline_run_id": {"type": "string"},
            },
            "required": ["stage"],
        },
    },
    {
        "name": "patch_stage",
        "description": "Change one stage of the saved pipeline (a new pipeline version): any of "
        "commands (the whole list), image, environment (merged; null removes a variable), "
        "cache (paths), working_directory.",
        "input_schema": {
            "type": "object",
            "properties": {
                "stage": {"type": "string"},
                "commands": {"type": "array", "items": {"type": "string"}},
                "image": {"type": "string"},
                "environment": {"type": "object"},
                "cache": {"type": "array", "items": {"type": "string"}},
                "working_directory": {"type": "string"},
            },
            "required": ["stage"],
        },
    },
]


def verifies(task_type: AgentTaskType, input_data: dict[str, Any]) -> bool:
    return task_type == AgentTaskType.GENERATE_PIPELINE and input_data.get("verify") is True


def tool_schemas(task_type: AgentTaskType, input_data: dict[str, Any]) -> list[dict[str, Any]]:
    """The tools of a task: the verification tools only when it verifies."""
    if verifies(task_type, input_data):
        return [*TOOL_SCHEMAS, *VERIFY_TOOL_SCHEMAS]
    return TOOL_SCHEMAS
