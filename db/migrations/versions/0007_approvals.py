"""Approvals that hold: each deployment keeps the approval rules it was created under, and every
person's decision is a row of its own.

- `deployments.approval_protected`, `required_approvals`, `approver_roles`: the environment's
  protection as it was when the deployment was requested.
- `deployment_approvals`: one decision per (deployment, person); a repeated approval by the same
  person is the same row, so distinct approvers are counted by the database.

Existing rows take their environment's current rules (with at least one approval when protected),
and the single approval or rejection they recorded becomes their first decision row.

Revision ID: 0007_approvals
Revises: 0006_accounts_hardening
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_approvals"
down_revision: str | None = "0006_accounts_hardening"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "deployments",
        sa.Column(
            "approval_protected", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )
    op.add_column(
        "deployments",
        sa.Column("required_approvals", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "deployments",
        sa.Column(
            "approver_roles",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )
    op.create_table(
        "deployment_approvals",
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "decided_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_approvals_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_deployment_approvals_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_approvals")),
        sa.UniqueConstraint(
            "deployment_id", "user_id", name=op.f("uq_deployment_approvals_deployment_id_user_id")
        ),
    )
    op.create_index(
        op.f("ix_deployment_approvals_user_id"), "deployment_approvals", ["user_id"], unique=False
    )
    op.execute(
        """
        UPDATE deployments d
        SET approval_protected = e.is_protected,
            required_approvals = CASE WHEN e.is_protected
                                      THEN GREATEST(e.required_approvals, 1) ELSE 0 END,
            approver_roles = '["owner", "admin"]'::jsonb
        FROM environments e
        WHERE e.id = d.environment_id
        """
    )
    op.execute(
        """
        INSERT INTO deployment_approvals (deployment_id, user_id, role, approved, reason, decided_at)
        SELECT id, approved_by_user_id, 'admin', true, COALESCE(approval_reason, ''),
               COALESCE(approved_at, now())
        FROM deployments WHERE approved_by_user_id IS NOT NULL
        UNION ALL
        SELECT id, rejected_by_user_id, 'admin', false, COALESCE(rejection_reason, ''),
               COALESCE(rejected_at, now())
        FROM deployments WHERE rejected_by_user_id IS NOT NULL
        ON CONFLICT DO NOTHING
        """
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_deployment_approvals_user_id"), table_name="deployment_approvals")
    op.drop_table("deployment_approvals")
    op.drop_column("deployments", "approver_roles")
    op.drop_column("deployments", "required_approvals")
    op.drop_column("deployments", "approval_protected")
