"""Payload models of the deployment workflows and activities (no I/O, importable from workflows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from forgeline.statuses.deployments import DeploymentStatus as DeploymentStatus

# Providers that really release something; every other name the seeds mention is refused.
AVAILABLE_PROVIDERS = ("docker", "static", "aws")
KNOWN_PROVIDERS = (
    *AVAILABLE_PROVIDERS,
    "vercel",
    "netlify",
    "cloudflare",
    "gcp",
    "azure",
    "custom",
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=False)


class HealthCheckPolicy(_Model):
    """How a release is judged: N consecutive passes within a window, else roll back."""

    path: str = "/"
    expected_status_max: int = 399
    max_latency_ms: int = 2_000
    request_timeout_seconds: float = 2.0
    interval_seconds: float = 0.5
    required_passes: int = 3
    failure_threshold: int = 3
    window_seconds: float = 30.0


class DeploymentSource(_Model):
    """What to deploy: a build context (dir or stored tarball) or an already-built artifact."""

    version: str
    commit_sha: str | None = None
    branch: str | None = None
    # Local directory on the worker host holding the repository checkout (pipeline workspace).
    context_dir: str | None = None
    # Object-store key of a tar.gz of the repository / build output.
    context_key: str | None = None
    dockerfile: str | None = None
    # Static output directory inside the context (e.g. "dist"); "." for the context root.
    output_dir: str | None = None
    framework: str | None = None
    # Already built artifacts (rollback / promote reuse these, no rebuild).
    image: str | None = None
    static_prefix: str | None = None


class SiteHeaderRule(_Model):
    source: str
    headers: dict[str, str] = Field(default_factory=dict)


class SiteRewrite(_Model):
    source: str
    destination: str


class SiteRedirect(_Model):
    source: str
    destination: str
    status_code: int = 308


class SiteConfig(_Model):
    """A static site's own rules (the project's `headers`, `rewrites`, `redirects`)."""

    headers: list[SiteHeaderRule] = Field(default_factory=list)
    rewrites: list[SiteRewrite] = Field(default_factory=list)
    redirects: list[SiteRedirect] = Field(default_factory=list)


class DeploymentRuntimeConfig(_Model):
    """Config snapshot released with the artifact (rollback restores it together with the image)."""

    container_port: int = 8080
    environment_variables: dict[str, str] = Field(default_factory=dict)
    region: str = "us-east-1"
    bucket_name: str | None = None
    health: HealthCheckPolicy = Field(default_factory=HealthCheckPolicy)
    # Static sites: publish dotfiles too (`.git` never); the environment's `publish_dotfiles`.
    publish_dotfiles: bool = False
    # Static sites: the project's rules, released (and rolled back) with the files.
    site: SiteConfig = Field(default_factory=SiteConfig)


class DeploymentInput(_Model):
    """Input of DeploymentWorkflow (also started as a child by the pipeline deploy stage)."""

    deployment_id: str
    organization_id: str
    project_id: str
    environment_id: str
    environment_name: str = ""
    environment_type: str = "development"
    provider: str = "docker"
    protected: bool = False
    triggered_by_user_id: str | None = None
    pipeline_run_id: str | None = None
    source: DeploymentSource
    config: DeploymentRuntimeConfig = Field(default_factory=DeploymentRuntimeConfig)
    approval_timeout_seconds: float = 24 * 3600.0
    approver_roles: list[str] = Field(default_factory=lambda: ["owner", "admin"])
    # Distinct approvers a protected deployment needs (the environment's count when requested).
    required_approvals: int = 1
    # Set when this deployment redeploys an earlier one (explicit rollback).
    rollback_of_deployment_id: str | None = None
    preview: bool = False
    start_monitor: bool = True
    monitor_interval_seconds: float = 60.0


class DeploymentResult(_Model):
    deployment_id: str
    status: DeploymentStatus
    url: str | None = None
    image: str | None = None
    reason: str | None = None
    rolled_back_to_deployment_id: str | None = None


class ApprovalDecision(_Model):
    """Body of the approve / reject Update."""

    approver_user_id: str
    approver_role: str
    approved: bool
    reason: str = Field(min_length=1, max_length=2000)


def unprintable(text: str) -> bool:
    """Control characters other than tab and line breaks (NUL first of all: Postgres text cannot
    hold it)."""
    return any((ord(ch) < 0x20 and ch not in "\t\n\r") or 0x7F <= ord(ch) < 0xA0 for ch in text)


class ApprovalOutcome(_Model):
    deployment_id: str
    approved: bool
    status: DeploymentStatus
    # Distinct people who approved so far (recorded), and how many the deployment needs.
    approved_by: list[str] = Field(default_factory=list)
    required_approvals: int = 1


class DeploymentProgress(_Model):
    """What the `progress` query answers (live detail for the API)."""

    deployment_id: str
    status: DeploymentStatus
    step: str
    url: str | None = None
    queued_behind: str | None = None


# --- activity payloads -------------------------------------------------------------------------


class StatusUpdate(_Model):
    deployment_id: str
    status: DeploymentStatus
    url: str | None = None
    image: str | None = None
    reason: str | None = None
    artifact: dict[str, str] | None = None
    health_summary: dict[str, object] | None = None
    set_deployed_at: bool = False
    set_rolled_back_at: bool = False


class ExecutionRecord(_Model):
    workflow_id: str
    run_id: str
    workflow_type: str
    organization_id: str
    project_id: str | None = None
    subject_id: str
    status: str = "running"
    task_queue: str = ""


class LockRequest(_Model):
    environment_id: str
    workflow_id: str
    deployment_id: str
    preview: bool = False
    # When the deployment was requested (its row's creation): the lock grants in this order, not
    # in the order requests reach it (a retried activity after a worker crash arrives late).
    requested_at: datetime | None = None


class BuildRequest(_Model):
    deployment_id: str
    project_id: str
    provider: str
    source: DeploymentSource


class BuildResult(_Model):
    image: str | None = None
    static_prefix: str | None = None
    generated_dockerfile: bool = False
    log_lines: int = 0


class ReleaseRequest(_Model):
    deployment_id: str
    organization_id: str
    project_id: str
    environment_id: str
    environment_type: str = "development"
    provider: str
    image: str | None = None
    static_prefix: str | None = None
    config: DeploymentRuntimeConfig = Field(default_factory=DeploymentRuntimeConfig)


class ReleaseResult(_Model):
    url: str
    container_id: str | None = None
    container_name: str | None = None
    host_port: int | None = None
    resources: list[str] = Field(default_factory=list)
    monthly_cost: str | None = None


class ProbeTarget(_Model):
    """Where a released deployment answers and how its health is judged: the same for the
    release's verification and for the monitor that keeps probing it."""

    provider: str
    url: str
    container_name: str | None = None
    static_prefix: str | None = None
    bucket_name: str | None = None
    region: str = "us-east-1"
    policy: HealthCheckPolicy = Field(default_factory=HealthCheckPolicy)

    def probe_target(self) -> dict[str, Any]:
        """The target's fields alone, to build another payload that probes the same release."""
        return {name: getattr(self, name) for name in ProbeTarget.model_fields}


class HealthRequest(ProbeTarget):
    deployment_id: str
    # Monitor probes record results but never need N passes.
    single_probe: bool = False


class HealthVerdict(_Model):
    healthy: bool
    checks: int
    consecutive_passes: int
    failures: int
    last_status: int | None = None
    last_latency_ms: int | None = None
    reason: str | None = None
    checked_at: datetime | None = None


class RetireRequest(_Model):
    """Remove what an environment served before (keep) or what a failed release left (drop)."""

    environment_id: str
    provider: str
    keep_deployment_id: str | None = None
    drop_deployment_id: str | None = None


class RetireResult(_Model):
    removed: list[str] = Field(default_factory=list)


class ActivationRequest(_Model):
    deployment_id: str
    environment_id: str
    organization_id: str
    url: str
    image: str | None = None
    health_summary: dict[str, object] = Field(default_factory=dict)
    rollback_of_deployment_id: str | None = None


class PreviousDeployment(_Model):
    deployment_id: str
    url: str | None = None
    image: str | None = None
    container_name: str | None = None


class PreviousLookup(_Model):
    environment_id: str
    exclude_deployment_id: str


class RollbackRecord(_Model):
    deployment_id: str
    reason: str
    previous: PreviousDeployment | None = None
    health_summary: dict[str, object] = Field(default_factory=dict)


class LogCollectRequest(_Model):
    deployment_id: str
    container_name: str


class LogCollectResult(_Model):
    lines: int


class UsageRequest(_Model):
    deployment_id: str
    organization_id: str
    project_id: str


class MonitorInput(ProbeTarget):
    deployment_id: str
    environment_id: str
    organization_id: str
    interval_seconds: float = 60.0
    checks_done: int = 0
    consecutive_failures: int = 0
    # Continue-as-new after this many probes keeps the history short.
    checks_per_run: int = 100


class MonitorProbe(_Model):
    deployment_id: str


class StillActive(_Model):
    active: bool


class PreviewInput(_Model):
    """Input of PreviewEnvironmentWorkflow: one per PR / branch preview environment."""

    environment_id: str
    organization_id: str
    project_id: str
    provider: str = "docker"
    ttl_seconds: float = 3 * 24 * 3600.0


class TeardownRequest(_Model):
    environment_id: str
    provider: str
    reason: str = "ttl"
    # Set when the time to live ran out: the preview has been quiet since then, unless a deploy
    # to it began meanwhile or is still under way (then it is kept: PreviewInUse). None: a
    # teardown that was asked for, done whatever is deploying.
    quiet_since: datetime | None = None


class DecisionRecord(_Model):
    deployment_id: str
    decision: ApprovalDecision
