"""Plan changes as a history, and build-slot limits that follow a plan change.

`subscription_plan_changes`: every plan change of a subscription (from, to, when, in order),
so an invoice charges each plan for the time it was in effect; a change now applies to
`subscriptions.plan_id` at once, and the pending changes of the earlier scheme move here.
`build_slot_set_limit(key, limit)`: sets an organization's build-slot limit and promotes its
queue up to it, returning the grants to deliver (a plan change calls it).

Revision ID: 0005_billing_periods
Revises: 0004_stage_runners
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_billing_periods"
down_revision: str | None = "0004_stage_runners"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SET_LIMIT_SIGNATURE = "build_slot_set_limit(text,integer)"
SET_LIMIT = """
CREATE FUNCTION build_slot_set_limit(
    p_key text, p_limit integer, OUT pending_runs text[], OUT pending_seqs bigint[]
)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE build_slots b SET slot_limit = greatest(p_limit, 1), updated_at = now()
    WHERE b.organization_key = p_key;
    IF NOT FOUND THEN
        pending_runs := '{}';
        pending_seqs := '{}';
        RETURN;  -- this organization never claimed a slot: its next claim brings the limit
    END IF;
    PERFORM build_slot_promote(p_key);
    SELECT p.runs, p.seqs INTO pending_runs, pending_seqs FROM build_slot_pending(p_key) p;
END;
$$
"""


def upgrade() -> None:
    op.create_table(
        "subscription_plan_changes",
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("from_plan_id", sa.Uuid(), nullable=False),
        sa.Column("to_plan_id", sa.Uuid(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.CheckConstraint(
            "from_plan_id <> to_plan_id",
            name=op.f("ck_subscription_plan_changes_plan_changes"),
        ),
        sa.ForeignKeyConstraint(
            ["from_plan_id"],
            ["plans.id"],
            name=op.f("fk_subscription_plan_changes_from_plan_id_plans"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_subscription_plan_changes_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_subscription_plan_changes_subscription_id_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["to_plan_id"],
            ["plans.id"],
            name=op.f("fk_subscription_plan_changes_to_plan_id_plans"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_plan_changes")),
        sa.UniqueConstraint("seq", name=op.f("uq_subscription_plan_changes_seq")),
    )
    op.create_index(
        op.f("ix_subscription_plan_changes_organization_id"),
        "subscription_plan_changes",
        ["organization_id"],
        unique=False,
    )
    op.create_index(
        "ix_subscription_plan_changes_subscription_id_seq",
        "subscription_plan_changes",
        ["subscription_id", "seq"],
        unique=False,
    )
    # Pending changes of the earlier scheme (limits applied at once, billing at the next
    # invoice) become applied changes with their history.
    op.execute(
        """
        INSERT INTO subscription_plan_changes
            (subscription_id, organization_id, from_plan_id, to_plan_id, changed_at)
        SELECT id, organization_id, plan_id, pending_plan_id, coalesce(pending_change_at, now())
        FROM subscriptions
        WHERE pending_plan_id IS NOT NULL AND pending_plan_id <> plan_id
        ORDER BY coalesce(pending_change_at, now()), id
        """
    )
    op.execute(
        """
        UPDATE subscriptions SET plan_id = pending_plan_id
        WHERE pending_plan_id IS NOT NULL
        """
    )
    op.execute(
        "UPDATE subscriptions SET pending_plan_id = NULL, pending_change_at = NULL"
        " WHERE pending_plan_id IS NOT NULL OR pending_change_at IS NOT NULL"
    )
    op.execute(SET_LIMIT)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {SET_LIMIT_SIGNATURE}")
    op.drop_index(
        "ix_subscription_plan_changes_subscription_id_seq",
        table_name="subscription_plan_changes",
    )
    op.drop_index(
        op.f("ix_subscription_plan_changes_organization_id"),
        table_name="subscription_plan_changes",
    )
    op.drop_table("subscription_plan_changes")
