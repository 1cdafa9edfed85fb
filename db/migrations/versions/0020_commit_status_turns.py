"""Commit status turns: a run's reports reach the forge one at a time through a leased row per
run (who holds the turn, until when) instead of a transaction-scoped advisory lock, so no
database connection is held while the forge answers.

Revision ID: 0020_commit_status_turns
Revises: 0019_oauth_browser_binding
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020_commit_status_turns"
down_revision: str | None = "0019_oauth_browser_binding"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "commit_status_turns",
        sa.Column("run_id", sa.Uuid(), primary_key=True),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("commit_status_turns")
