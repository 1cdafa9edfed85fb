"""Projects and what they point at: repositories, git provider connections, environments, files."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, Timestamps, UUIDPrimaryKey
from db.models.columns import TZ_DATETIME, check_in, created_at_column, json_object
from forgeline.statuses.deployments import EnvironmentStatus
from forgeline.statuses.projects import ProjectStatus

PROJECT_TYPES = ("static_site", "ssr_app", "spa", "api", "fullstack")
# The seed's list ("nextjs, react, vue, angular, svelte, nuxt, etc.") widened to what the
# built-in planner detects.
FRAMEWORKS = (
    "static_html",
    "nextjs",
    "react",
    "vue",
    "nuxt",
    "angular",
    "svelte",
    "sveltekit",
    "astro",
    "gatsby",
    "remix",
    "express",
    "node",
    "django",
    "flask",
    "fastapi",
    "python",
    "go",
    "rust",
    "java",
    "spring",
    "rails",
    "ruby",
    "php",
    "laravel",
    "dockerfile",
    "monorepo",
    "other",
)
PROJECT_STATUSES = tuple(ProjectStatus)
GIT_PROVIDERS = ("github", "gitlab", "bitbucket", "git", "local")
OAUTH_PROVIDERS = ("github", "gitlab", "bitbucket")
ENVIRONMENT_TYPES = ("development", "staging", "production", "preview")
DEPLOY_PROVIDERS = (
    "docker",
    "static",
    "aws",
    "vercel",
    "netlify",
    "cloudflare",
    "gcp",
    "azure",
    "coolify",
    "custom",
)
ENVIRONMENT_STATUSES = tuple(EnvironmentStatus)


class Project(UUIDPrimaryKey, Timestamps, Base):
    """A website or application; owned by an organization or by a single user, never both."""

    __tablename__ = "projects"

    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    owner_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE")
    )
    created_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(String(255))
    slug: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    project_type: Mapped[str] = mapped_column(String(50))
    framework: Mapped[str | None] = mapped_column(String(100))
    # Build/install commands, output directory, environment variable names, headers, rewrites.
    config: Mapped[dict[str, Any]] = json_object()
    status: Mapped[str] = mapped_column(String(50), default="active", server_default="active")
    archived_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    repository: Mapped[Repository | None] = relationship(
        back_populates="project", lazy="raise", uselist=False, passive_deletes=True
    )
    environments: Mapped[list[Environment]] = relationship(
        back_populates="project", lazy="raise", passive_deletes=True
    )

    __table_args__ = (
        CheckConstraint(
            "(organization_id IS NULL) <> (owner_user_id IS NULL)", name="exactly_one_owner"
        ),
        CheckConstraint("slug ~ '^[a-z0-9][a-z0-9-]*$'", name="slug_format"),
        check_in("project_type", PROJECT_TYPES),
        check_in("framework", FRAMEWORKS),
        check_in("status", PROJECT_STATUSES),
        Index(
            "uq_projects_organization_id_slug",
            "organization_id",
            "slug",
            unique=True,
            postgresql_where=text("organization_id IS NOT NULL"),
        ),
        Index(
            "uq_projects_owner_user_id_slug",
            "owner_user_id",
            "slug",
            unique=True,
            postgresql_where=text("owner_user_id IS NOT NULL"),
        ),
        # Keyset pagination of a tenant's projects, newest first.
        Index("ix_projects_organization_id_created_at", "organization_id", "created_at", "id"),
        Index("ix_projects_owner_user_id_created_at", "owner_user_id", "created_at", "id"),
    )


class GitProviderConnection(UUIDPrimaryKey, Timestamps, Base):
    """OAuth link to GitHub/GitLab/Bitbucket for a user or an organization; tokens encrypted."""

    __tablename__ = "git_provider_connections"

    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(50))
    external_account_id: Mapped[str | None] = mapped_column(String(255))
    external_username: Mapped[str | None] = mapped_column(String(255))
    # None for a GitHub App installation: its tokens are minted per use, never stored.
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    refresh_token_encrypted: Mapped[str | None] = mapped_column(Text)
    # The GitHub App installation this connection is, and the repositories (owner/name) it
    # covers as its installation webhooks last said.
    installation_id: Mapped[int | None] = mapped_column(BigInteger)
    installation_repositories: Mapped[list[str]] = mapped_column(
        ARRAY(String(300)), default=list, server_default=text("'{}'::varchar[]")
    )
    scopes: Mapped[list[str]] = mapped_column(
        ARRAY(String(100)), default=list, server_default=text("'{}'::varchar[]")
    )
    token_expires_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    revoked_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    __table_args__ = (
        CheckConstraint("user_id IS NOT NULL OR organization_id IS NOT NULL", name="has_owner"),
        check_in("provider", OAUTH_PROVIDERS),
        Index(
            "uq_git_provider_connections_user_id_provider",
            "user_id",
            "provider",
            unique=True,
            postgresql_where=text("user_id IS NOT NULL AND organization_id IS NULL"),
        ),
        # A forge account signs in one user.
        Index(
            "uq_git_provider_connections_identity",
            "provider",
            "external_account_id",
            unique=True,
            postgresql_where=text(
                "user_id IS NOT NULL AND organization_id IS NULL"
                " AND external_account_id IS NOT NULL"
            ),
        ),
        # One organization holds an installation.
        Index(
            "uq_git_provider_connections_installation_id",
            "installation_id",
            unique=True,
            postgresql_where=text("installation_id IS NOT NULL"),
        ),
        CheckConstraint(
            "installation_id IS NOT NULL OR access_token_encrypted IS NOT NULL",
            name="has_credential",
        ),
    )


class Repository(UUIDPrimaryKey, Timestamps, Base):
    """The one git repository of a project; credentials encrypted at rest, never returned."""

    __tablename__ = "repositories"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), unique=True
    )
    connection_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("git_provider_connections.id", ondelete="SET NULL"), index=True
    )
    provider: Mapped[str] = mapped_column(String(50))
    url: Mapped[str] = mapped_column(String(1000))
    default_branch: Mapped[str] = mapped_column(String(255), default="main", server_default="main")
    external_repo_id: Mapped[str | None] = mapped_column(String(255))
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    webhook_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    # Webhook id/url/events at the provider; the secret lives only in webhook_secret_encrypted.
    webhook_config: Mapped[dict[str, Any]] = json_object()
    last_commit_sha: Mapped[str | None] = mapped_column(String(64))
    last_synced_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    project: Mapped[Project] = relationship(back_populates="repository", lazy="raise")

    __table_args__ = (check_in("provider", GIT_PROVIDERS),)


class Environment(UUIDPrimaryKey, Timestamps, Base):
    """A deployment target of a project (development, staging, production, preview)."""

    __tablename__ = "environments"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    env_type: Mapped[str] = mapped_column(String(50))
    provider: Mapped[str] = mapped_column(String(50))
    # Provider settings, domain, region, health check path, environment variable names.
    config: Mapped[dict[str, Any]] = json_object()
    url: Mapped[str | None] = mapped_column(String(1000))
    is_protected: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    required_approvals: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    auto_deploy: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    preview_branch: Mapped[str | None] = mapped_column(String(255))
    preview_pr_number: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    status: Mapped[str] = mapped_column(String(50), default="active", server_default="active")

    project: Mapped[Project] = relationship(back_populates="environments", lazy="raise")

    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        check_in("env_type", ENVIRONMENT_TYPES),
        check_in("provider", DEPLOY_PROVIDERS),
        check_in("status", ENVIRONMENT_STATUSES),
        CheckConstraint("required_approvals >= 0", name="required_approvals_non_negative"),
        # Keyset pagination of a project's environments, newest first.
        Index("ix_environments_project_id_created_at", "project_id", "created_at", "id"),
        # Preview teardown sweeps look only at previews that have a TTL.
        Index(
            "ix_environments_preview_expires_at",
            "expires_at",
            postgresql_where=text("env_type = 'preview' AND expires_at IS NOT NULL"),
        ),
    )


class ProjectFile(UUIDPrimaryKey, Base):
    """One file of the analysed index of a repository at a commit (content stays in git)."""

    __tablename__ = "project_files"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    commit_sha: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1000))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    sha256: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(50))
    is_manifest: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    metadata_: Mapped[dict[str, Any]] = json_object("metadata")
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("project_id", "commit_sha", "path"),
        CheckConstraint("size_bytes >= 0", name="size_non_negative"),
    )
