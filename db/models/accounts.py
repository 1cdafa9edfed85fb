"""Identity and tenancy: organizations, users, memberships, sessions, API keys, notifications."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

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
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, Timestamps, UUIDPrimaryKey
from db.models.columns import TZ_DATETIME, check_in, created_at_column, json_array, json_object
from forgeline.statuses.accounts import InvitationStatus, OrgRole, TokenPurpose

if TYPE_CHECKING:
    from db.models.projects import Project

ORG_ROLES = tuple(OrgRole)
PROJECT_ROLES = ("admin", "developer", "viewer")
THEMES = ("light", "dark", "system")


class Organization(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "organizations"

    name: Mapped[str] = mapped_column(String(255))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    billing_email: Mapped[str | None] = mapped_column(String(320))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    settings: Mapped[dict[str, Any]] = json_object()

    members: Mapped[list[OrganizationMember]] = relationship(
        back_populates="organization", lazy="raise", passive_deletes=True
    )

    __table_args__ = (CheckConstraint("slug ~ '^[a-z0-9][a-z0-9-]*$'", name="slug_format"),)


class User(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(255))
    # Argon2id hash; NULL for accounts that only sign in through an OAuth provider.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    avatar_url: Mapped[str | None] = mapped_column(String(500))
    github_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    google_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    email_verified: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    totp_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # The last accepted TOTP time step: a code is good once, even within its 30-second window.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    # Hashes of one-time backup codes; a used code is removed from the list.
    backup_code_hashes: Mapped[list[Any]] = json_array()
    last_login_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    memberships: Mapped[list[OrganizationMember]] = relationship(
        back_populates="user",
        lazy="raise",
        passive_deletes=True,
        foreign_keys="OrganizationMember.user_id",
    )

    __table_args__ = (
        # Email is unique case-insensitively: one account per mailbox.
        Index("uq_users_email_lower", func.lower(email), unique=True),
    )


class OrganizationMember(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "organization_members"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(20), default="member", server_default="member")
    invited_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )

    organization: Mapped[Organization] = relationship(back_populates="members", lazy="raise")
    user: Mapped[User] = relationship(
        back_populates="memberships", lazy="raise", foreign_keys=[user_id]
    )

    __table_args__ = (
        UniqueConstraint("organization_id", "user_id"),
        check_in("role", ORG_ROLES),
    )


class UserPreference(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "user_preferences"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    theme: Mapped[str] = mapped_column(String(20), default="system", server_default="system")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    email_notifications: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=text("true")
    )
    deployment_success_notifications: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=text("true")
    )
    deployment_failure_notifications: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=text("true")
    )
    settings: Mapped[dict[str, Any]] = json_object()

    __table_args__ = (check_in("theme", THEMES),)


class UserSession(UUIDPrimaryKey, Base):
    """A login session; the bearer token is stored only as a hash and rotates on refresh."""

    __tablename__ = "sessions"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    expires_at: Mapped[datetime] = mapped_column(TZ_DATETIME)
    revoked_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    rotated_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    # The session that replaced this one on refresh (token rotation chain).
    replaced_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="SET NULL")
    )
    mfa_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(Text)
    device_info: Mapped[dict[str, Any]] = json_object()
    last_seen_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        Index(
            "ix_sessions_user_active",
            "user_id",
            "expires_at",
            postgresql_where=text("revoked_at IS NULL"),
        ),
        # "Known address" checks of the login throttle.
        Index("ix_sessions_user_id_ip_address", "user_id", "ip_address"),
    )


INVITATION_STATUSES = tuple(InvitationStatus)


class OrganizationInvitation(UUIDPrimaryKey, Base):
    """An offer of membership to an existing user; the membership exists only once they accept."""

    __tablename__ = "organization_invitations"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    invited_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    expires_at: Mapped[datetime] = mapped_column(TZ_DATETIME)
    responded_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        check_in("role", ORG_ROLES),
        check_in("status", INVITATION_STATUSES),
        # At most one open invitation per person and organization (a concurrent re-invite is 409).
        Index(
            "uq_organization_invitations_pending",
            "organization_id",
            "user_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_organization_invitations_user_id_status", "user_id", "status"),
    )


TOKEN_PURPOSES = tuple(TokenPurpose)


class PasswordResetToken(UUIDPrimaryKey, Base):
    """A set-password link: only the SHA-256 of the random token is stored."""

    __tablename__ = "password_reset_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    purpose: Mapped[str] = mapped_column(
        String(20), default="password_reset", server_default="password_reset"
    )
    # A set-password link sent with an invitation also accepts it (following it is consent).
    invitation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organization_invitations.id", ondelete="CASCADE")
    )
    expires_at: Mapped[datetime] = mapped_column(TZ_DATETIME)
    used_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    # Set when a completed reset (or a migration) withdraws a token that was never used.
    revoked_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    requested_ip: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        check_in("purpose", TOKEN_PURPOSES),
        CheckConstraint("token_hash ~ '^[0-9a-f]{64}$'", name="token_hash_sha256_hex"),
    )


class AuthThrottle(Base):
    """One fixed-window attempt counter of the sign-in throttles (see core/accounts/throttle.py),
    shared by every API process. `subject` is a SHA-256 digest: no e-mail or address in clear."""

    __tablename__ = "auth_throttles"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime] = mapped_column(TZ_DATETIME)
    expires_at: Mapped[datetime] = mapped_column(TZ_DATETIME, index=True)


class ApiKeyRateWindow(Base):
    """Requests of one API key in one minute (see core/accounts/rate_limit.py), shared by every
    API process. A key keeps its current and previous minute; older rows go as it is used."""

    __tablename__ = "api_key_rate_windows"

    api_key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    window_start: Mapped[datetime] = mapped_column(TZ_DATETIME, primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)

    # Unlogged: a count costs no WAL flush (a crash only forgets the current minute's counts).
    __table_args__ = {"prefixes": ["UNLOGGED"]}


class ApiKey(UUIDPrimaryKey, Timestamps, Base):
    """Programmatic access: shown once, stored as prefix + SHA-256 hex digest."""

    __tablename__ = "api_keys"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    created_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    key_prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(
        ARRAY(String(64)), default=list, server_default=text("'{}'::varchar[]")
    )
    rate_limit_per_minute: Mapped[int] = mapped_column(
        Integer, default=600, server_default=text("600")
    )
    expires_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    last_used_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    revoked_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    __table_args__ = (
        CheckConstraint("rate_limit_per_minute > 0", name="rate_limit_positive"),
        CheckConstraint("key_hash ~ '^[0-9a-f]{64}$'", name="key_hash_sha256_hex"),
        Index("ix_api_keys_organization_id_created_at", "organization_id", "created_at", "id"),
        Index("ix_api_keys_expires_at", "expires_at", postgresql_where=text("revoked_at IS NULL")),
    )


class ProjectMember(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "project_members"

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(20), default="developer", server_default="developer")
    joined_at: Mapped[datetime] = mapped_column(TZ_DATETIME, server_default=func.now())

    project: Mapped[Project] = relationship(lazy="raise")

    __table_args__ = (
        UniqueConstraint("project_id", "user_id"),
        check_in("role", PROJECT_ROLES),
    )


class Notification(UUIDPrimaryKey, Base):
    """An in-app notification for a user, an organization, or a user within an organization."""

    __tablename__ = "notifications"

    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    type: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(255))
    body: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = json_object()
    read_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("user_id IS NOT NULL OR organization_id IS NOT NULL", name="has_recipient"),
        Index("ix_notifications_user_id_created_at", "user_id", "created_at"),
        Index("ix_notifications_organization_id_created_at", "organization_id", "created_at"),
        Index("ix_notifications_user_unread", "user_id", postgresql_where=text("read_at IS NULL")),
    )
