"""Request and response bodies of the accounts API. Requests forbid unknown fields, and none of
them accepts an organization ID, a hash, or the caller's own role."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core.accounts.scopes import ALL_SCOPES
from forgeline.statuses.accounts import InvitationStatus, OrgRole, Scope

# No whitespace and no control characters (C0, DEL, C1): an address goes into mail headers,
# where a line break would end the header.
_EMAIL_CHAR = r"[^@\s\x00-\x1f\x7f-\x9f]"
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        max_length=320,
        pattern=rf"^{_EMAIL_CHAR}+@{_EMAIL_CHAR}+\.{_EMAIL_CHAR}+$",
    ),
]
# Upper bound keeps Argon2 from being handed megabytes to hash.
Password = Annotated[str, StringConstraints(min_length=10, max_length=256)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Slug = Annotated[
    str, StringConstraints(min_length=2, max_length=60, pattern=r"^[a-z0-9][a-z0-9-]*[a-z0-9]$")
]
TotpCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- auth


class SignupRequest(RequestModel):
    email: Email
    password: Password
    name: Name
    organization_name: Name
    organization_slug: Slug | None = None


class LoginRequest(RequestModel):
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    totp_code: TotpCode | None = None
    organization_slug: Slug | None = Field(
        default=None, description="Organization to sign in to; default: the first one joined."
    )


class PasswordResetRequest(RequestModel):
    email: Email


class PasswordResetConfirm(RequestModel):
    token: Annotated[str, StringConstraints(min_length=10, max_length=200)]
    new_password: Password


class TotpCodeRequest(RequestModel):
    code: TotpCode


class SessionOut(BaseModel):
    token: str = Field(description="Bearer token; shown once. Expires after 7 days.")
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    user_id: UUID
    organization_id: UUID


class TotpEnrollOut(BaseModel):
    secret: str
    otpauth_uri: str


class TotpStatusOut(BaseModel):
    enabled: bool


# ---------------------------------------------------------------- users, orgs, members


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    email: str
    name: str
    totp_enabled: bool
    created_at: datetime


class OrganizationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    name: str
    slug: str
    billing_email: str | None
    created_at: datetime


class OrganizationUpdate(RequestModel):
    name: Name | None = None
    billing_email: Email | None = None


class SignupOut(BaseModel):
    user: UserOut
    organization: OrganizationOut
    session: SessionOut


class MeOut(BaseModel):
    user: UserOut | None
    organization: OrganizationOut
    role: OrgRole
    scopes: list[str]
    auth_method: Literal["session", "api_key"]
    api_key_id: UUID | None = None


class MemberOut(BaseModel):
    id: UUID
    user_id: UUID
    email: str
    name: str
    role: OrgRole
    created_at: datetime


class MemberAdd(RequestModel):
    email: Email
    role: OrgRole = OrgRole.MEMBER


class MemberInvite(RequestModel):
    email: Email
    name: Name | None = None
    role: OrgRole = OrgRole.MEMBER


class MemberRoleUpdate(RequestModel):
    role: OrgRole


class InvitationOut(BaseModel):
    """An invitation as the organization's administrators see it."""

    id: UUID
    user_id: UUID
    email: str
    role: OrgRole
    status: InvitationStatus
    expires_at: datetime
    created_at: datetime


class MyInvitationOut(BaseModel):
    """An invitation as the invited user sees it."""

    id: UUID
    organization_id: UUID
    organization_name: str
    organization_slug: str
    role: OrgRole
    expires_at: datetime
    created_at: datetime


class InvitationAccepted(BaseModel):
    organization: OrganizationOut
    member: MemberOut


# ---------------------------------------------------------------- API keys


class ApiKeyCreate(RequestModel):
    name: Name
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(ALL_SCOPES))]
    expires_at: datetime | None = Field(default=None, description="Absolute expiry (future).")
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    rate_limit_per_minute: Annotated[int, Field(ge=1, le=100_000)] = 600


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    name: str
    key_prefix: str
    scopes: list[str]
    rate_limit_per_minute: int
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_by_user_id: UUID | None
    created_at: datetime


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The full key. Shown once; only its hash is stored.")
