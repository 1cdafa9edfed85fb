"""Accounts hardening: invitations that the invited user accepts, sign-in throttles shared by
every API process, and set-password links that exist only as hashes.

- `organization_invitations`: an offer of membership (pending, accepted, declined, revoked,
  expired); one pending offer per person and organization.
- `auth_throttles`: fixed-window attempt counters keyed by (scope, SHA-256 of the subject).
- `password_reset_tokens`: `purpose`, `invitation_id` and `revoked_at` (a completed reset
  withdraws the user's other links); the hash column is checked to be SHA-256 hex.
- `sessions (user_id, ip_address)` index for the throttle's "known address" check.

Existing rows: notifications of password resets and invitations held the raw link in their body
and data. They are redacted, and every link that was still live is revoked rather than hashed:
the hash of each link is already stored, so hashing would add nothing; the raw value has sat in
the database (and its backups and replicas), so it must count as disclosed. A user whose link
died asks for a new one (`POST /v1/auth/password-reset/request`, which also serves members who
were invited and never set a password).

Revision ID: 0006_accounts_hardening
Revises: 0005_billing_periods
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_accounts_hardening"
down_revision: str | None = "0005_billing_periods"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "organization_invitations",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("invited_by_user_id", sa.Uuid(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("responded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.CheckConstraint(
            "role IN ('owner', 'admin', 'member', 'viewer')",
            name=op.f("ck_organization_invitations_role_valid"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'declined', 'revoked', 'expired')",
            name=op.f("ck_organization_invitations_status_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["invited_by_user_id"],
            ["users.id"],
            name=op.f("fk_organization_invitations_invited_by_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_organization_invitations_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_organization_invitations_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization_invitations")),
    )
    op.create_index(
        "uq_organization_invitations_pending",
        "organization_invitations",
        ["organization_id", "user_id"],
        unique=True,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_organization_invitations_user_id_status",
        "organization_invitations",
        ["user_id", "status"],
    )

    op.create_table(
        "auth_throttles",
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "subject", name=op.f("pk_auth_throttles")),
    )
    op.create_index(
        op.f("ix_auth_throttles_expires_at"), "auth_throttles", ["expires_at"], unique=False
    )

    op.add_column(
        "password_reset_tokens",
        sa.Column("purpose", sa.String(length=20), server_default="password_reset", nullable=False),
    )
    op.add_column("password_reset_tokens", sa.Column("invitation_id", sa.Uuid(), nullable=True))
    op.add_column(
        "password_reset_tokens",
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_foreign_key(
        op.f("fk_password_reset_tokens_invitation_id_organization_invitations"),
        "password_reset_tokens",
        "organization_invitations",
        ["invitation_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_check_constraint(
        op.f("ck_password_reset_tokens_purpose_valid"),
        "password_reset_tokens",
        "purpose IN ('password_reset', 'invitation')",
    )
    op.create_check_constraint(
        op.f("ck_password_reset_tokens_token_hash_sha256_hex"),
        "password_reset_tokens",
        "token_hash ~ '^[0-9a-f]{64}$'",
    )
    op.create_index("ix_sessions_user_id_ip_address", "sessions", ["user_id", "ip_address"])

    # Links that sat in clear in `notifications` count as disclosed: revoke, then redact.
    op.execute(
        "UPDATE password_reset_tokens SET revoked_at = now() "
        "WHERE used_at IS NULL AND revoked_at IS NULL"
    )
    op.execute(
        "UPDATE notifications SET "
        "body = 'This link was withdrawn; request a new one if you still need it.', "
        "data = data - 'reset_url' - 'set_password_url' "
        "WHERE type IN ('password_reset', 'organization_invitation') "
        "AND (data ? 'reset_url' OR data ? 'set_password_url')"
    )


def downgrade() -> None:
    op.drop_index("ix_sessions_user_id_ip_address", table_name="sessions")
    op.drop_constraint(
        op.f("ck_password_reset_tokens_token_hash_sha256_hex"),
        "password_reset_tokens",
        type_="check",
    )
    op.drop_constraint(
        op.f("ck_password_reset_tokens_purpose_valid"), "password_reset_tokens", type_="check"
    )
    op.drop_constraint(
        op.f("fk_password_reset_tokens_invitation_id_organization_invitations"),
        "password_reset_tokens",
        type_="foreignkey",
    )
    # A withdrawn link must stay dead without its column: mark it used.
    op.execute("UPDATE password_reset_tokens SET used_at = revoked_at WHERE revoked_at IS NOT NULL")
    op.drop_column("password_reset_tokens", "revoked_at")
    op.drop_column("password_reset_tokens", "invitation_id")
    op.drop_column("password_reset_tokens", "purpose")
    op.drop_index(op.f("ix_auth_throttles_expires_at"), table_name="auth_throttles")
    op.drop_table("auth_throttles")
    op.drop_index(
        "ix_organization_invitations_user_id_status", table_name="organization_invitations"
    )
    op.drop_index("uq_organization_invitations_pending", table_name="organization_invitations")
    op.drop_table("organization_invitations")
