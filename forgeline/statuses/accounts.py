"""Vocabularies of accounts and the audit trail: organization roles, API scopes, invitation
statuses, set-password token purposes and audit actor types.

The member order is the order the database check constraints list them in.
"""

from __future__ import annotations

from enum import StrEnum


class OrgRole(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


class Scope(StrEnum):
    PROJECTS_READ = "projects:read"
    PROJECTS_WRITE = "projects:write"
    PIPELINES_READ = "pipelines:read"
    PIPELINES_WRITE = "pipelines:write"
    DEPLOYMENTS_TRIGGER = "deployments:trigger"
    ENVIRONMENTS_READ = "environments:read"
    BILLING_READ = "billing:read"
    ADMIN = "admin"


class InvitationStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    REVOKED = "revoked"
    EXPIRED = "expired"


class TokenPurpose(StrEnum):
    PASSWORD_RESET = "password_reset"
    INVITATION = "invitation"


class ActorType(StrEnum):
    USER = "user"
    API_KEY = "api_key"
    SYSTEM = "system"
