"""Every activity of the deployments domain: its registered name, input, output and the errors
that are never retried. The names are part of recorded histories and never change.

Pure: importable inside the workflow sandbox.
"""

from __future__ import annotations

from workflows.contract import ActivityContract
from workflows.deployment_models import (
    ActivationRequest,
    BuildRequest,
    BuildResult,
    DecisionRecord,
    DeploymentInput,
    ExecutionRecord,
    HealthRequest,
    HealthVerdict,
    LockRequest,
    LogCollectRequest,
    LogCollectResult,
    MonitorProbe,
    PreviousDeployment,
    PreviousLookup,
    ReleaseRequest,
    ReleaseResult,
    RetireRequest,
    RetireResult,
    RollbackRecord,
    StatusUpdate,
    StillActive,
    TeardownRequest,
    UsageRequest,
)
from workflows.runs_models import DeployStageInput

# Errors that no attempt can fix: a bad artifact, bad input, a provider this installation
# lacks, a row that is gone, a state that forbids the step.
NON_RETRYABLE = ("BuildFailed", "ValidationFailed", "ProviderUnavailable", "NotFound", "Conflict")
# The monitor and the preview teardown only stop on a deployment or environment that is gone.
GONE = ("NotFound",)
# A preview whose time to live ran out while a deploy to it was under way or had just begun:
# kept (its lifetime waits again), never torn down under the new deploy.
PREVIEW_IN_USE = "PreviewInUse"

# --- bookkeeping (projections into Postgres) ----------------------------------------------------

RECORD_STATUS = ActivityContract(
    "deployment_record_status", StatusUpdate, type(None), non_retryable=NON_RETRYABLE
)
RECORD_EXECUTION = ActivityContract(
    "deployment_record_execution", ExecutionRecord, type(None), non_retryable=NON_RETRYABLE
)
ENSURE_ROW = ActivityContract(
    "deployment_ensure_row", DeploymentInput, type(None), non_retryable=NON_RETRYABLE
)
RECORD_DECISION = ActivityContract(
    "deployment_record_decision", DecisionRecord, type(None), non_retryable=NON_RETRYABLE
)
ACQUIRE_LOCK = ActivityContract(
    "deployment_acquire_lock", LockRequest, type(None), non_retryable=NON_RETRYABLE
)
ACTIVATE = ActivityContract(
    "deployment_activate", ActivationRequest, type(None), non_retryable=NON_RETRYABLE
)
RECORD_USAGE = ActivityContract(
    "deployment_record_usage", UsageRequest, type(None), non_retryable=NON_RETRYABLE
)
RECORD_ROLLBACK = ActivityContract(
    "deployment_record_rollback", RollbackRecord, type(None), non_retryable=NON_RETRYABLE
)
PREVIOUS_HEALTHY = ActivityContract[PreviousLookup, PreviousDeployment | None](
    "deployment_previous_healthy", PreviousLookup, PreviousDeployment, non_retryable=NON_RETRYABLE
)
NEWER_LIVE = ActivityContract[PreviousLookup, PreviousDeployment | None](
    "deployment_newer_live", PreviousLookup, PreviousDeployment, non_retryable=NON_RETRYABLE
)

# --- the release itself ------------------------------------------------------------------------

BUILD = ActivityContract("deployment_build", BuildRequest, BuildResult, non_retryable=NON_RETRYABLE)
RELEASE = ActivityContract(
    "deployment_release", ReleaseRequest, ReleaseResult, non_retryable=NON_RETRYABLE
)
VERIFY_HEALTH = ActivityContract(
    "deployment_verify_health", HealthRequest, HealthVerdict, non_retryable=NON_RETRYABLE
)
COLLECT_LOGS = ActivityContract(
    "deployment_collect_logs", LogCollectRequest, LogCollectResult, non_retryable=NON_RETRYABLE
)
RETIRE = ActivityContract(
    "deployment_retire", RetireRequest, RetireResult, non_retryable=NON_RETRYABLE
)
RESTORE_PREVIOUS = ActivityContract(
    "deployment_restore_previous", PreviousDeployment, type(None), non_retryable=NON_RETRYABLE
)

# --- after the release: monitor and preview lifetime -------------------------------------------

STILL_ACTIVE = ActivityContract(
    "deployment_still_active", MonitorProbe, StillActive, non_retryable=GONE
)
MONITOR_PROBE = ActivityContract(
    "deployment_monitor_probe", HealthRequest, HealthVerdict, non_retryable=GONE
)
TEARDOWN_ENVIRONMENT = ActivityContract[TeardownRequest, list[str]](
    "deployment_teardown_environment",
    TeardownRequest,
    list,
    non_retryable=(*GONE, PREVIEW_IN_USE),
)

# --- the pipeline's deploy stage ---------------------------------------------------------------

# The deploy stage of a pipeline run: validates the environment, enforces the monthly limit,
# writes the deployments row and answers the DeploymentWorkflow input the run starts as a child.
PREPARE_PIPELINE_DEPLOYMENT = ActivityContract(
    "prepare_pipeline_deployment", DeployStageInput, DeploymentInput
)
