"""Failure classes: a failed stage attempt records whose fault it was (`failure_class`:
infrastructure, flaky, code or config), the cause in words and the log lines that show it.

Revision ID: 0010_failure_classes
Revises: 0009_log_limits
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_failure_classes"
down_revision: str | None = "0009_log_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "ck_stage_executions_failure_class_valid"


def upgrade() -> None:
    op.add_column("stage_executions", sa.Column("failure_class", sa.String(20), nullable=True))
    op.add_column("stage_executions", sa.Column("failure_cause", sa.Text(), nullable=True))
    op.add_column(
        "stage_executions",
        sa.Column(
            "failure_evidence",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
    )
    op.create_check_constraint(
        op.f(CONSTRAINT),
        "stage_executions",
        "failure_class IN ('infrastructure', 'flaky', 'code', 'config')",
    )


def downgrade() -> None:
    op.drop_constraint(op.f(CONSTRAINT), "stage_executions", type_="check")
    op.drop_column("stage_executions", "failure_evidence")
    op.drop_column("stage_executions", "failure_cause")
    op.drop_column("stage_executions", "failure_class")
