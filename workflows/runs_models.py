"""Payload models of the PipelineRunWorkflow and its activities (stages, build slots).

Large data (logs, artifacts, repository contents) never travels in these: only IDs and keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from forgeline.statuses.runs import FailureClass, PreviousStageRule, RunStatus, StageStatus
from workflows.stage_runtime_models import MatrixLeg, ServiceSpec, StageCache

# Error types the run activities raise (their contracts: workflows/contracts/runs.py).
STAGE_FAILED_ERROR = "StageFailed"
STAGE_TIMED_OUT_ERROR = "StageTimedOut"
STAGE_INVALID_ERROR = "StageInvalid"
RUN_NOT_FOUND_ERROR = "RunNotFound"

# A queued run's slot is free: the signal names the claim it grants (SlotGrant).
GRANT_SIGNAL = "slot_granted"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)


class StageConditions(_Model):
    """When a stage runs: branch globs, changed-path globs, rule on its dependencies' status."""

    branches: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    previous_stage_status: PreviousStageRule = PreviousStageRule.SUCCESS


class StageSpec(_Model):
    name: str
    stage_id: str | None = None
    stage_type: str = "custom"
    position: int = 0
    image: str | None = None
    script: str
    conditions: StageConditions = Field(default_factory=StageConditions)
    timeout_seconds: int = 600
    depends_on: list[str] = Field(default_factory=list)
    retry_count: int = 0
    retryable_exit_codes: list[int] = Field(default_factory=list)
    allow_failure: bool = False
    artifact_paths: list[str] = Field(default_factory=list)
    network_enabled: bool = False
    working_directory: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    cpus: float | None = None
    memory_mb: int | None = None
    pids_limit: int | None = None
    retry_initial_interval_seconds: float = 1.0
    retry_maximum_interval_seconds: float = 30.0
    # A deploy stage with an environment also starts the DeploymentWorkflow as a child.
    deploy_environment_id: str | None = None
    # The pipeline's `config.limits`: log bytes kept (None: the operator's cap, never more), and
    # what reaching the log or the artifact limits does to the stage.
    log_max_bytes: int | None = None
    on_log_limit: Literal["fail", "truncate"] = "fail"
    on_artifact_limit: Literal["warn", "fail"] = "warn"
    # The plan decided the stage does not run, and why (a verification run's deploy stage).
    skip: str | None = None
    cache: StageCache | None = None
    services: list[ServiceSpec] = Field(default_factory=list)
    # A leg of a matrix stage (its name is the leg's: `test (3.12)`).
    matrix_leg: MatrixLeg | None = None
    # Hash of everything above that affects the result: rerun-from-failed reuses on equality.
    spec_hash: str = ""


class RunLimits(_Model):
    """The run's plan limits, read when the run starts (None: the operator's cap applies)."""

    # Log bytes one stage attempt keeps.
    log_max_bytes: int | None = None
    # Disk the run may take: its workspace and its stages' log spools together.
    disk_mb: int | None = None


class ResolvedVariables(_Model):
    """One stage's variables, decrypted by the control plane for the build host that runs it.

    Plain secret values: this model only ever travels inside encrypted payloads
    (forgeline/payload_codec.py), never in IDs, search attributes, memos or logs.
    """

    env: dict[str, str] = Field(default_factory=dict)
    # The secret values among them, masked in the stage's log.
    secrets: list[str] = Field(default_factory=list)

    def __repr__(self) -> str:  # never printed with its values (workflow or activity logs)
        return f"ResolvedVariables({len(self.env)} variables, {len(self.secrets)} secret)"

    __str__ = __repr__


class RunVariables(_Model):
    """A run's variables as its stages see them, by deploy environment ID ("" = the run's own
    environment): taken when the run starts, the same for all its stages."""

    by_environment: dict[str, ResolvedVariables] = Field(default_factory=dict)

    def for_stage(self, deploy_environment_id: str | None) -> ResolvedVariables:
        return self.by_environment.get(deploy_environment_id or "") or ResolvedVariables()

    def __repr__(self) -> str:
        return f"RunVariables({sorted(self.by_environment)})"

    __str__ = __repr__


class ReusableStage(_Model):
    execution_id: str
    spec_hash: str
    exit_code: int | None = None


class DeployStageInput(_Model):
    run_id: str
    organization_id: str | None = None
    project_id: str
    environment_id: str
    commit_sha: str | None = None
    branch: str | None = None


class PipelineRunInput(_Model):
    run_id: str
    pipeline_id: str
    project_id: str
    organization_id: str | None = None
    # 3x this is the stage heartbeat timeout: how fast a dead worker is noticed. Not lower by
    # default: an overloaded worker's event loop can delay heartbeats by seconds.
    heartbeat_seconds: float = 5.0


class RunPlan(_Model):
    run_id: str
    run_number: int
    pipeline_id: str
    project_id: str
    organization_id: str | None = None
    branch: str | None = None
    commit_sha: str | None = None
    has_repository: bool = False
    stages: list[StageSpec]
    reusable: dict[str, ReusableStage] = Field(default_factory=dict)
    concurrent_builds: int = 1
    status: RunStatus = RunStatus.QUEUED
    # Granted while preparing (a free slot): the run starts without waiting for a grant signal.
    slot_granted: bool = False
    # The run's build-slot claim (a grant signal for another claim is not for this one).
    slot_claim: int | None = None
    # Granted and nothing to clone: preparing also marked the run started (no start_run step).
    started: bool = False
    changed_paths: list[str] | None = None
    # The build hosts' task queue (pool) this run's stages execute on.
    build_task_queue: str | None = None
    # Set when preparing also started the run (else the checkout's result carries them).
    variables: RunVariables | None = None
    # The plan's limits when the run was prepared (a queued run reads them again at start).
    limits: RunLimits | None = None

    def deploy_environment_ids(self) -> list[str]:
        """The deploy environments its stages name (their variables are resolved at start)."""
        return sorted({s.deploy_environment_id for s in self.stages if s.deploy_environment_id})


class RunStarted(_Model):
    run_id: str
    workflow_id: str
    workflow_run_id: str
    task_queue: str
    branch: str | None = None
    commit_sha: str | None = None
    # The deploy environments the run's stages name: their variables are resolved too.
    environment_ids: list[str] = Field(default_factory=list)


class CheckoutInput(_Model):
    run_id: str
    branch: str | None = None
    commit_sha: str | None = None


class CheckoutResult(_Model):
    commit_sha: str | None = None
    # None when unknown (no repository, no parent): path conditions then match.
    changed_paths: list[str] | None = None
    # The run's variables, resolved when it started (build hosts cannot decrypt them).
    variables: RunVariables | None = None
    # The plan's limits as they stood when the run started (None: a run from before them).
    limits: RunLimits | None = None
    # The commit's `.forgeline.yml` (validated), when it has one: its stages replace the stored
    # pipeline's for this run, with the stages a rerun may reuse among them.
    stages: list[StageSpec] | None = None
    reusable: dict[str, ReusableStage] = Field(default_factory=dict)

    def applied_to(
        self, plan: RunPlan, status: dict[str, StageStatus]
    ) -> tuple[RunPlan, dict[str, StageStatus]]:
        """The plan this run executes, and its stages' statuses (all pending) to match."""
        if self.stages is None:
            return plan, status
        update = {"stages": self.stages, "reusable": self.reusable}
        return plan.model_copy(update=update), {s.name: StageStatus.PENDING for s in self.stages}


class FinishRunInput(_Model):
    run_id: str
    status: RunStatus
    error: str | None = None
    workflow_id: str
    workflow_run_id: str
    spec_hashes: dict[str, str] = Field(default_factory=dict)
    # The build-slot semaphore to release (its organization key); None = nothing held.
    slot_key: str | None = None
    # A cancelled run's stages that were running: their last attempt is closed `cancelled`.
    cancelled_stages: list[str] = Field(default_factory=list)


class StageInput(_Model):
    run_id: str
    organization_id: str | None = None
    stage: StageSpec
    branch: str | None = None
    commit_sha: str | None = None
    run_number: int = 0
    # The run's last stage, whose success decides the run: when this attempt succeeds, the
    # activity closes the run too (one local activity less); None = the workflow closes it.
    finish: FinishRunInput | None = None
    # The stage's resolved variables (None: a run from before build hosts, or none at all).
    variables: ResolvedVariables | None = None
    # The run's plan limits (None: the operator's caps only).
    limits: RunLimits | None = None


class StageResult(_Model):
    stage_name: str
    status: StageStatus
    exit_code: int | None = None
    attempt: int = 1
    execution_id: str | None = None
    duration_ms: int = 0
    artifact_count: int = 0
    reused: bool = False
    skip_reason: str | None = None
    error: str | None = None
    # The attempt also closed the run (StageInput.finish).
    run_finished: bool = False
    # A failed or timed-out attempt: whose fault it was (it decides the retry).
    failure_class: FailureClass | None = None
    # What the attempt's row records as its warnings (e.g. the Python that ran instead).
    warnings: list[str] = []


class SkipStageInput(_Model):
    run_id: str
    stage: StageSpec
    reason: str


class LostAttemptsInput(_Model):
    run_id: str
    stage: StageSpec
    # Attempts 1..attempts were started; those without a row never opened one.
    attempts: int


class ReuseStageInput(_Model):
    run_id: str
    stage: StageSpec
    reused: ReusableStage


class RunStatusView(_Model):
    """Answer of the `status` query: live state without touching Postgres."""

    run_id: str
    status: RunStatus
    queued_for_slot: bool = False
    stages: dict[str, StageStatus] = Field(default_factory=dict)
    running: list[str] = Field(default_factory=list)


class SlotRequest(_Model):
    organization_key: str
    run_workflow_id: str
    limit: int = 1


class SlotClaim(_Model):
    """Answer of acquiring: held now, or queued (then a SlotGrant signal for `seq` follows)."""

    granted: bool
    seq: int


class SlotGrant(_Model):
    seq: int


def build_slot_key(organization_id: str | None, project_id: str) -> str:
    """The build slots a run claims from: its organization's (its project's without one)."""
    return organization_id or f"project-{project_id}"


def pipeline_run_workflow_id(run_id: str) -> str:
    return f"pipeline-run-{run_id}"
