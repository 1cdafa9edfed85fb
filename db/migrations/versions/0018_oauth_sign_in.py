"""Sign in with GitHub and GitLab: pending authorization requests (hashed state, encrypted PKCE
verifier, used once) and one user per forge account.

Revision ID: 0018_oauth_sign_in
Revises: 0017_stage_runtime
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_oauth_sign_in"
down_revision: str | None = "0017_stage_runtime"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oauth_states",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("code_verifier_encrypted", sa.Text(), nullable=False),
        sa.Column("link_user_id", sa.Uuid(), nullable=True),
        sa.Column("organization_slug", sa.String(length=100), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "provider IN ('github', 'gitlab')", name=op.f("ck_oauth_states_provider_valid")
        ),
        sa.ForeignKeyConstraint(
            ["link_user_id"],
            ["users.id"],
            name=op.f("fk_oauth_states_link_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_oauth_states")),
    )
    op.create_index(
        "uq_git_provider_connections_identity",
        "git_provider_connections",
        ["provider", "external_account_id"],
        unique=True,
        postgresql_where=sa.text(
            "user_id IS NOT NULL AND organization_id IS NULL AND external_account_id IS NOT NULL"
        ),
    )


def downgrade() -> None:
    op.drop_index("uq_git_provider_connections_identity", table_name="git_provider_connections")
    op.drop_table("oauth_states")
