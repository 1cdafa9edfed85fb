"""The one typed settings object of every Forgeline process (API, worker, CLI, tests)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from forgeline.search_attributes import SEARCH_ATTRIBUTE_NAMES

PLACEHOLDER = "change-me"

# Task queues: one worker per queue (worker.py), named for the workflows they serve.
AGENT_TASK_QUEUE = "agent"
PIPELINES_TASK_QUEUE = "pipelines"
DEPLOYMENTS_TASK_QUEUE = "deployments"
BILLING_TASK_QUEUE = "billing"
# Forge events (webhook deliveries) and commit statuses reported back to the forge.
INTEGRATIONS_TASK_QUEUE = "integrations"
# Notifications: recording events and delivering them (webhooks, e-mail, Slack).
NOTIFICATIONS_TASK_QUEUE = "notifications"
# Operations: the scheduled reconciler of projections with Temporal.
OPERATIONS_TASK_QUEUE = "operations"
TASK_QUEUES = (
    AGENT_TASK_QUEUE,
    PIPELINES_TASK_QUEUE,
    DEPLOYMENTS_TASK_QUEUE,
    BILLING_TASK_QUEUE,
    INTEGRATIONS_TASK_QUEUE,
    NOTIFICATIONS_TASK_QUEUE,
    OPERATIONS_TASK_QUEUE,
)
# Stage execution: served by build hosts only (`forgeline build-host`), never the control worker.
BUILDS_TASK_QUEUE = "builds"

# Custom search attributes operators filter on in the Temporal UI (all Keyword).
SEARCH_ATTRIBUTES = SEARCH_ATTRIBUTE_NAMES


def _env(name: str) -> AliasChoices:
    """Accept both the prefixed name and the conventional one (e.g. DATABASE_URL)."""
    return AliasChoices(f"FORGELINE_{name}", name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FORGELINE_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path(".data")
    log_level: str = "INFO"

    # PostgreSQL: unset means the embedded server under data_dir.
    database_url: str | None = Field(default=None, validation_alias=_env("DATABASE_URL"))
    # The schema owner's URL, for migrations only (unset: DATABASE_URL); the build hosts'
    # least-privilege role (db/roles.py). Unset with the embedded server: its own roles.
    migration_database_url: str | None = Field(
        default=None, validation_alias=_env("MIGRATION_DATABASE_URL")
    )
    build_database_url: str | None = Field(
        default=None, validation_alias=_env("BUILD_DATABASE_URL")
    )
    embedded_postgres_port: int = 54329
    # Other PostgreSQL binaries (initdb, pg_ctl, postgres) for the embedded server.
    pg_bin_dir: Path | None = None
    db_pool_size: int = 10
    db_max_overflow: int = 20

    # Temporal: unset means the embedded dev server (SQLite file under data_dir).
    temporal_address: str | None = Field(default=None, validation_alias=_env("TEMPORAL_ADDRESS"))
    temporal_namespace: str = Field(default="default", validation_alias=_env("TEMPORAL_NAMESPACE"))
    temporal_tls: bool = Field(default=False, validation_alias=_env("TEMPORAL_TLS"))
    temporal_api_key: SecretStr | None = Field(
        default=None, validation_alias=_env("TEMPORAL_API_KEY")
    )
    embedded_temporal_port: int = 7233
    embedded_temporal_ui_port: int = 8233

    # Worker: seconds in-flight activities get after SIGTERM; threads for sync activities.
    worker_shutdown_grace_seconds: float = 30
    worker_activity_threads: int = 32
    # Run workflow code inside the Temporal sandbox (its runtime checks for non-deterministic
    # calls). The test suite turns it on, so every workflow path it covers runs checked; workers
    # run without it by default, which saves CPU on every workflow activation.
    workflow_sandbox: bool = False

    # HTTP API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # API worker processes behind the one port (None: one per CPU core available): a slow or
    # streaming request never holds the only event loop. Shared state lives in PostgreSQL.
    api_workers: int | None = Field(default=None, ge=1, le=64)
    public_base_url: str = "http://localhost:8000"
    max_request_body_bytes: int = 1_048_576
    # GET /metrics needs `Authorization: Bearer <token>` when set; unset, loopback clients only.
    metrics_token: SecretStr | None = None
    # host:port the worker serves the Temporal SDK's Prometheus metrics on (unset: not served).
    worker_metrics_address: str | None = None

    # Forges: the REST APIs commit statuses are reported to (GitHub Enterprise, self-hosted GitLab).
    github_api_url: str = "https://api.github.com"
    gitlab_api_url: str = "https://gitlab.com/api/v4"
    # The operator's GitHub App (repositories connected through its installations, check runs):
    # its ID, its private key (PEM) and the secret its webhook deliveries are signed with.
    github_app_id: int | None = None
    github_app_private_key: SecretStr | None = None
    github_app_webhook_secret: SecretStr | None = None
    # Sign in with GitHub / GitLab (OAuth apps): unset, that provider's buttons are absent.
    github_web_url: str = "https://github.com"
    gitlab_web_url: str = "https://gitlab.com"
    github_oauth_client_id: str | None = None
    github_oauth_client_secret: SecretStr | None = None
    gitlab_oauth_client_id: str | None = None
    gitlab_oauth_client_secret: SecretStr | None = None
    # Webhook deliveries larger than this are refused (GitHub caps its payloads at 25 MB).
    webhook_max_body_bytes: int = 25 * 1024 * 1024

    # Secrets. Fernet keys (comma-separated, newest first) encrypt tokens at rest.
    encryption_keys: SecretStr = Field(
        default=SecretStr(PLACEHOLDER), validation_alias=_env("ENCRYPTION_KEYS")
    )

    # Temporal payload encryption (AES-GCM, comma-separated base64 keys, newest first), shared by
    # the control plane and build hosts; unset outside production: a key kept in the data dir.
    payload_keys: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "FORGELINE_PAYLOAD_KEYS", "FORGELINE_PAYLOAD_KEY", "PAYLOAD_KEYS"
        ),
    )

    # Build hosts: the task queue (pool) stages run on; this process is a build host (holds no
    # encryption, Stripe or Anthropic keys; refused in production when given any).
    build_task_queue: str = BUILDS_TASK_QUEUE
    build_host: bool = False

    # Object store: a local directory unless an S3 bucket is configured.
    storage_dir: Path | None = None
    s3_bucket: str | None = Field(default=None, validation_alias=_env("S3_BUCKET"))
    s3_endpoint_url: str | None = Field(default=None, validation_alias=_env("S3_ENDPOINT_URL"))
    s3_region: str = Field(default="us-east-1", validation_alias=_env("AWS_REGION"))
    aws_access_key_id: SecretStr | None = Field(
        default=None, validation_alias=_env("AWS_ACCESS_KEY_ID")
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None, validation_alias=_env("AWS_SECRET_ACCESS_KEY")
    )

    # LLM: unset key means the deterministic built-in planner.
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=_env("ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=_env("ANTHROPIC_BASE_URL")
    )
    anthropic_model: str = "claude-sonnet-4-6"
    agent_max_steps: int = 24
    agent_token_budget: int = 200_000

    # Payments: unset key means invoices are issued for manual collection.
    stripe_api_key: SecretStr | None = Field(default=None, validation_alias=_env("STRIPE_API_KEY"))
    stripe_api_base: str | None = Field(default=None, validation_alias=_env("STRIPE_API_BASE"))
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=_env("STRIPE_WEBHOOK_SECRET")
    )
    tax_rate: Decimal = Decimal("0")
    stripe_timeout_seconds: float = 30.0

    # Notifications: e-mail over SMTP (unset host: .eml files in data_dir/outbox), and the
    # bounded retries with exponential backoff of each webhook, Slack or e-mail delivery.
    smtp_host: str | None = Field(default=None, validation_alias=_env("SMTP_HOST"))
    smtp_port: int = Field(default=587, validation_alias=_env("SMTP_PORT"))
    smtp_username: str | None = Field(default=None, validation_alias=_env("SMTP_USERNAME"))
    smtp_password: SecretStr | None = Field(default=None, validation_alias=_env("SMTP_PASSWORD"))
    smtp_starttls: bool = True
    smtp_implicit_tls: bool = False
    mail_from: str = "Forgeline <no-reply@forgeline.local>"
    notification_max_attempts: int = Field(default=6, ge=1, le=50)
    notification_retry_initial_seconds: float = Field(default=10.0, gt=0)
    notification_retry_max_seconds: float = Field(default=900.0, gt=0)
    notification_request_timeout_seconds: float = Field(default=10.0, gt=0)
    # The queue notification workflows run on (tests give each test its own).
    notifications_task_queue: str = NOTIFICATIONS_TASK_QUEUE
    # The queue of forge deliveries, commit statuses, pull request reports and schedule firings
    # (tests give each test its own, so none of an earlier test's reaches a later one's forge).
    integrations_task_queue: str = INTEGRATIONS_TASK_QUEUE
    # The reconciler: a Temporal Schedule every `interval`, looking `lookback` back for executions
    # closed outside Forgeline (terminated, cancelled, timed out) to reflect in their rows.
    operations_task_queue: str = OPERATIONS_TASK_QUEUE
    reconciler_interval_seconds: float = Field(default=10.0, ge=1)
    reconciler_lookback_seconds: float = Field(default=3600.0, gt=0)
    # How often the insights rollup (daily aggregates in system_metrics) runs.
    insights_rollup_seconds: float = Field(default=3600.0, ge=1)

    # Builds and deployments.
    # auto = the sandbox (bubblewrap) when it works here, else Docker when an engine answers.
    # `unsafe-local` runs stages as plain processes with the worker's identity: development only.
    container_runner: Literal["auto", "sandbox", "docker", "unsafe-local"] = "auto"
    # The unprivileged user stages run as (sandbox and Docker runners), never the worker's.
    build_uid: int = 61000
    build_gid: int = 61000
    # Defaults for stages that set no limit of their own.
    build_memory_mb: int = 4096
    build_pids_limit: int = 1024
    build_disk_mb: int = 10240
    build_cpus: float | None = None
    # Per stage attempt: log bytes kept (a pipeline may set less in config.limits), and the
    # artifacts uploaded (files, total bytes). Past them the stage says so (see README).
    stage_log_max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    stage_log_rate_bytes: int = Field(default=8 * 1024 * 1024, ge=65536)
    artifact_max_files: int = Field(default=1000, ge=1)
    artifact_max_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)
    # Egress of sandboxed stages: an upstream proxy to chain to, extra networks (CIDR) they may
    # reach although private (an internal registry mirror), a CA bundle mounted for them, or the
    # host's own CA variables passed through.
    build_proxy: str | None = None
    build_egress_allow: list[str] = Field(default_factory=list)
    build_ca_bundle: Path | None = None
    build_pass_host_ca: bool = False
    # Extra read-only paths mounted into the sandbox (toolchains outside /usr, e.g. /opt/tools).
    build_toolchain_paths: list[Path] = Field(default_factory=list)
    # Python installations for sandboxed Python stages besides /usr (prefixes, or directories of
    # them such as pyenv's versions/); None: pyenv, uv-managed and /opt/python where present.
    build_python_roots: list[Path] | None = None
    # A package index (registry mirror) pip and uv use in sandboxed Python stages.
    build_python_index_url: str | None = None
    # The npm registry (or a mirror) Node.js toolchains of sandboxed stages come from.
    build_node_registry_url: str | None = None
    # Sandboxes a build host starts ahead of its stages (each serves one stage, then is torn
    # down); 0 starts each sandbox when its stage asks.
    build_sandbox_pool: int = Field(default=2, ge=0, le=64)
    # How many may wait when stages keep finding none waiting (back down when the host idles).
    build_sandbox_pool_max: int = Field(default=6, ge=0, le=64)
    docker_host: str | None = Field(default=None, validation_alias=_env("DOCKER_HOST"))
    # Docker deployments are served by a reverse proxy (Caddy, configured through its admin API)
    # at <environment>.<project>.<apps_domain> on proxy_http_port. proxy_network: a Docker
    # network the proxy shares with the app containers (compose); empty means the proxy runs on
    # the engine's host and reaches containers on ports published on 127.0.0.1 only.
    apps_domain: str = "localhost"
    proxy_admin_url: str = "http://127.0.0.1:2019"
    proxy_http_port: int = 8080
    proxy_network: str | None = None
    allow_local_repositories: bool = False
    # Where local repositories and deployment `source_dir`s may live: each organization only
    # under `<root>/<organization id>/` of one of these roots (JSON list). Unset: `data_dir /
    # local-repositories` in development and test, none in production.
    local_repository_roots: list[Path] = Field(default_factory=list)
    # Published static sites, one directory per deployment, served by the proxy's file server
    # on the site's own host name. Unset: `data_dir/sites`.
    sites_dir: Path | None = None
    # Repository clones (agent analysis, pipeline runs): refused past these limits.
    repo_max_bytes: int = 200_000_000
    repo_max_files: int = 50_000
    git_clone_timeout_seconds: int = 300
    workspace_dir: Path | None = None
    # Image for stages that name none (Docker runner only).
    default_stage_image: str = "debian:bookworm-slim"

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        key = self.encryption_keys.get_secret_value()
        if self.build_host:
            self._refuse_build_host_keys(key)
        elif self.environment != "development" and key in ("", PLACEHOLDER):
            raise ValueError(
                "FORGELINE_ENCRYPTION_KEYS must be set to real Fernet keys outside development"
            )
        if self.environment == "production" and self.container_runner == "unsafe-local":
            raise ValueError(
                "FORGELINE_CONTAINER_RUNNER=unsafe-local runs builds with the worker's identity "
                "and is refused in production: use sandbox or docker"
            )
        if self.environment == "production" and not (self.database_url and self.temporal_address):
            raise ValueError("DATABASE_URL and TEMPORAL_ADDRESS are required in production")
        if self.environment == "production" and self.payload_keys is None:
            raise ValueError("FORGELINE_PAYLOAD_KEYS is required in production")
        return self

    def _refuse_build_host_keys(self, encryption_key: str) -> None:
        """A build host runs hostile code: in production it must not hold the platform's keys."""
        if self.environment != "production":
            return
        held = [
            name
            for name, present in (
                ("FORGELINE_ENCRYPTION_KEYS", encryption_key not in ("", PLACEHOLDER)),
                ("STRIPE_API_KEY", self.stripe_api_key is not None),
                ("STRIPE_WEBHOOK_SECRET", self.stripe_webhook_secret is not None),
                ("ANTHROPIC_API_KEY", self.anthropic_api_key is not None),
            )
            if present
        ]
        if held:
            raise ValueError(f"a build host must not be given {', '.join(held)}")

    @property
    def objects_dir(self) -> Path:
        return self.storage_dir or self.data_dir / "objects"

    @property
    def workspaces_dir(self) -> Path:
        return self.workspace_dir or self.data_dir / "workspaces"

    @property
    def published_sites_dir(self) -> Path:
        return self.sites_dir or self.data_dir / "sites"

    @property
    def local_roots(self) -> list[Path]:
        if self.local_repository_roots:
            return list(self.local_repository_roots)
        if self.environment == "production":
            return []
        return [self.data_dir / "local-repositories"]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
