"""Pull request reports: the one forge comment a pull request gets (its ID, kept so every push
edits it, and the digest of its body, so an unchanged comment is not edited again), the CI
status of each pipeline, and why a coverage report was not read.

Revision ID: 0011_pull_request_reports
Revises: 0010_failure_classes
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011_pull_request_reports"
down_revision: str | None = "0010_failure_classes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("pr_tracking", sa.Column("comment_id", sa.String(64), nullable=True))
    op.add_column("pr_tracking", sa.Column("comment_digest", sa.String(64), nullable=True))
    op.add_column(
        "pr_tracking",
        sa.Column(
            "pipeline_checks",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column("pr_tracking", sa.Column("coverage_note", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("pr_tracking", "coverage_note")
    op.drop_column("pr_tracking", "pipeline_checks")
    op.drop_column("pr_tracking", "comment_digest")
    op.drop_column("pr_tracking", "comment_id")
