"""Payload models of the AgentTaskWorkflow and its activities (pure pydantic, no I/O imports)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from forgeline.statuses.agent import AgentProvider, AgentTaskStatus, AgentTaskType

PLANNER_VERSION = "forgeline-planner-1"


class Preferences(BaseModel):
    model_config = ConfigDict(extra="ignore")

    deploy_provider: str | None = None
    include_tests: bool = True
    include_lint: bool = True
    include_security_scan: bool = True
    enable_preview_deployments: bool = False
    default_branch: str | None = None
    # A Forgeline environment of the task's project (checked by the API): the generated deploy
    # stage then starts a DeploymentWorkflow for it. The name is filled in by the API, never
    # taken from the client.
    deploy_environment_id: uuid.UUID | None = None
    deploy_environment_name: str | None = None


class AgentTaskInputData(BaseModel):
    """The client's `input_data`: what to analyse and how the pipeline should look."""

    model_config = ConfigDict(extra="forbid")

    branch: str | None = Field(default=None, max_length=200)
    commit: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{7,40}$")
    framework_hint: str | None = Field(default=None, max_length=60)
    app_path: str | None = Field(default=None, max_length=300)
    pipeline_run_id: uuid.UUID | None = None
    preferences: Preferences = Field(default_factory=Preferences)
    # generate_pipeline: run the validated pipeline on the commit and repair what is its fault
    # until it runs green or `verify_attempts` runs were made.
    verify: bool = False
    verify_attempts: int = Field(default=3, ge=1, le=10)


# --- repository analysis -------------------------------------------------------------------------


class AppDetection(BaseModel):
    """One buildable application found in the repository (the root, or one app of a monorepo)."""

    path: str = "."
    name: str
    language: str
    framework: str
    confidence: float
    package_manager: str | None = None
    install_command: str | None = None
    lint_command: str | None = None
    test_command: str | None = None
    build_command: str | None = None
    output_directory: str | None = None
    image: str | None = None
    cache_paths: list[str] = Field(default_factory=list)
    lockfiles: list[str] = Field(default_factory=list)
    has_dockerfile: bool = False
    # The build runs in another image than the app's (a PHP app's front-end assets in Node).
    build_image: str | None = None
    # Executables the app's own install puts on PATH (pip's console scripts of its packages).
    provided_tools: list[str] = Field(default_factory=list)
    # Service containers its tests need (images such as postgres:16) and the variables that
    # configure them and point the tests at them (DATABASE_URL, POSTGRES_PASSWORD, ...).
    services: list[str] = Field(default_factory=list)
    service_env: dict[str, str] = Field(default_factory=dict)
    # Toolchain versions the repository already tests against (its CI matrix, tox, nox).
    version_matrix: list[str] = Field(default_factory=list)
    estimated_build_seconds: int = 60
    evidence: list[str] = Field(default_factory=list)
    # Run after the install and before the tests (an .env from its example, app keys, a
    # generated client, migrations on a file database).
    setup_commands: list[str] = Field(default_factory=list)
    # End-to-end suites (Playwright, Cypress) are not the unit test stage; what they need first.
    e2e_test_command: str | None = None
    e2e_setup_commands: list[str] = Field(default_factory=list)
    # app (deployable) | library | tooling | workspace (the root of a JS workspace)
    role: str = "app"
    # Which file declared each command ("test" -> ".github/workflows/ci.yml").
    command_sources: dict[str, str] = Field(default_factory=dict)


class RepoAnalysis(BaseModel):
    apps: list[AppDetection]
    is_monorepo: bool = False
    workspace_tool: str | None = None
    workspace_install_command: str | None = None
    workspace_image: str | None = None
    # turbo | nx | lerna | redwood: the task runner that builds and tests the workspace.
    task_runner: str | None = None
    # Workspace members that are no app of their own: path -> library | tooling | component
    # (a side of the root app, such as Redwood's api/ and web/).
    workspace_packages: dict[str, str] = Field(default_factory=dict)
    file_count: int = 0
    notes: list[str] = Field(default_factory=list)

    @property
    def primary(self) -> AppDetection:
        return self.apps[0]


# --- workflow and activity payloads --------------------------------------------------------------


class AgentTaskState(BaseModel):
    """What one run of the workflow hands to the next through continue-as-new: the execution,
    the checkout, the loop's counters and the tool results the next turn still has to see."""

    execution: StartExecutionOutput | None = None
    checkout: CheckoutResult | None = None
    step_number: int = 0
    tokens_used: int = 0
    conversation_ref: str | None = None
    planner_state: dict[str, Any] = Field(default_factory=dict)
    pending_results: list[ToolActivityOutput] = Field(default_factory=list)
    # A proposed pipeline passed validation (and no newer draft replaced it).
    validated: bool = False
    # The failed run's logs were read (what troubleshoot_failure needs before it may finish).
    logs_read: bool = False
    final_text: str = ""
    llm_error: str | None = None
    continued_runs: int = 0
    # Verification runs the model made with run_pipeline (a Verification dumped), and whether
    # it patched the pipeline since the last of them.
    verification: dict[str, Any] | None = None
    patched_since_run: bool = False


# Payloads written before the state had its own model carry these fields flat on the input.
_FLAT_STATE_FIELDS = tuple(name for name in AgentTaskState.model_fields if name != "logs_read")


class AgentTaskWorkflowInput(BaseModel):
    """What the workflow is asked to do, plus the state carried across continue-as-new."""

    task_id: uuid.UUID
    organization_id: uuid.UUID
    project_id: uuid.UUID
    task_type: AgentTaskType
    # Start a new run of the workflow after this many turns (history stays small).
    continue_as_new_after_steps: int = 40
    # A worker that dies mid-activity is noticed after this long (activities heartbeat).
    heartbeat_timeout_seconds: int = 30
    # Verification (generate_pipeline): run the pipeline as a child PipelineRunWorkflow on this
    # task queue, at most `verify_attempts` runs. Off in every history recorded before it.
    verify: bool = False
    verify_attempts: int = 3
    verification_task_queue: str = "pipelines"
    state: AgentTaskState = Field(default_factory=AgentTaskState)

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_state(cls, data: Any) -> Any:
        """Decode continue-as-new payloads of the earlier flat shape (recorded histories)."""
        if not isinstance(data, dict) or not any(k in data for k in _FLAT_STATE_FIELDS):
            return data
        data = dict(data)
        flat = {k: data.pop(k) for k in _FLAT_STATE_FIELDS if k in data}
        planner_state = flat.get("planner_state")
        if isinstance(planner_state, dict) and planner_state.get("logs_read"):
            flat["logs_read"] = True
        nested = data.get("state")
        data["state"] = {**flat, **(nested if isinstance(nested, dict) else {})}
        return data


class AgentTaskWorkflowOutput(BaseModel):
    task_id: uuid.UUID
    status: AgentTaskStatus
    output: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class StartExecutionInput(BaseModel):
    task_id: uuid.UUID
    sequence: int = 1
    force_planner: bool = False
    previous_error: str | None = None


class StartExecutionOutput(BaseModel):
    execution_id: uuid.UUID
    sequence: int
    provider: AgentProvider
    agent_version: str
    input_data: dict[str, Any]
    max_steps: int
    token_budget: int


class CheckoutInput(BaseModel):
    task_id: uuid.UUID
    project_id: uuid.UUID
    branch: str | None = None
    commit: str | None = None


class CheckoutResult(BaseModel):
    workspace: str
    commit_sha: str
    branch: str | None
    file_count: int
    size_bytes: int


class ToolCall(BaseModel):
    """One tool call of the agent (from the model or from the planner)."""

    call_id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolActivityInput(BaseModel):
    task_id: uuid.UUID
    execution_id: uuid.UUID
    step_number: int
    invocation_key: str
    call: ToolCall
    checkout: CheckoutResult
    input_data: dict[str, Any] = Field(default_factory=dict)


class ToolActivityOutput(BaseModel):
    call_id: str
    name: str
    ok: bool
    # What the model sees (capped); large results stay in the projection/object store.
    content: str
    # Small facts about the result for the read model (counts, detected framework).
    data: dict[str, Any] = Field(default_factory=dict)
    duration_ms: int = 0
    # validate_pipeline only: whether the current draft passed validation.
    valid: bool | None = None

    @model_validator(mode="after")
    def _valid_from_data(self) -> ToolActivityOutput:
        # Results recorded before `valid` was a field carried it in `data`.
        if self.valid is None and self.name == "validate_pipeline":
            recorded = self.data.get("valid")
            if isinstance(recorded, bool):
                self.valid = recorded
        return self

    @property
    def passed_validation(self) -> bool:
        return self.name == "validate_pipeline" and self.valid is True


class LlmTurnInput(BaseModel):
    task_id: uuid.UUID
    execution_id: uuid.UUID
    sequence: int = 1
    step_number: int
    conversation_ref: str | None
    # Tool results from the previous turn, appended to the stored conversation first.
    tool_results: list[ToolActivityOutput] = Field(default_factory=list)
    task_type: AgentTaskType
    input_data: dict[str, Any] = Field(default_factory=dict)
    max_tokens: int = 4096


class LlmTurnOutput(BaseModel):
    conversation_ref: str
    stop_reason: str | None
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: str = "0"


class PlannerTurnInput(BaseModel):
    task_id: uuid.UUID
    execution_id: uuid.UUID
    step_number: int
    description: str = ""
    task_type: AgentTaskType
    input_data: dict[str, Any] = Field(default_factory=dict)
    planner_state: dict[str, Any] = Field(default_factory=dict)
    tool_results: list[ToolActivityOutput] = Field(default_factory=list)


class PlannerTurnOutput(BaseModel):
    planner_state: dict[str, Any]
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    done: bool = False


class FinishInput(BaseModel):
    task_id: uuid.UUID
    execution_id: uuid.UUID | None
    task_type: AgentTaskType
    status: AgentTaskStatus
    checkout: CheckoutResult | None = None
    final_text: str = ""
    error: str | None = None
    stop_reason: str | None = None
    tokens_used: int = 0
    steps: int = 0
    llm_error: str | None = None
    conversation_ref: str | None = None
    # The verification's verdict (a Verification dumped), stored with the pipeline.
    verification: dict[str, Any] | None = None


class FinishOutput(BaseModel):
    status: AgentTaskStatus
    output: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


AgentTaskState.model_rebuild()
AgentTaskWorkflowInput.model_rebuild()
