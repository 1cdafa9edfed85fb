"""Stage output limits: `stage_executions.warnings` says what an attempt did not keep (its log
past the log limit, artifacts past the artifact limits).

Revision ID: 0009_log_limits
Revises: 0007_approvals
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_log_limits"
down_revision: str | None = "0007_approvals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "stage_executions",
        sa.Column(
            "warnings",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("stage_executions", "warnings")
