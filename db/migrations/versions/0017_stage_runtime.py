"""Pipeline stages: services, matrix and cache key of the pipeline document in one JSON column.

Revision ID: 0017_stage_runtime
Revises: 0016_github_app_installations
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017_stage_runtime"
down_revision: str | None = "0016_github_app_installations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "pipeline_stages",
        sa.Column(
            "runtime",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("pipeline_stages", "runtime")
