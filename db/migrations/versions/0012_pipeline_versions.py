"""Pipeline versions: every change to a pipeline is an immutable `pipeline_versions` row with its
author and the whole document; a run records the version it was created under and whether it
executed that version or its commit's `.forgeline.yml`; a deleted pipeline is archived
(`archived_at`), its runs kept.

Revision ID: 0012_pipeline_versions
Revises: 0011_pull_request_reports
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012_pipeline_versions"
down_revision: str | None = "0011_pull_request_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pipeline_versions",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("pipeline_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(20), nullable=False),
        sa.Column("author_user_id", sa.Uuid(), nullable=True),
        sa.Column("author_api_key_id", sa.Uuid(), nullable=True),
        sa.Column("agent_task_id", sa.Uuid(), nullable=True),
        sa.Column("spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "change IN ('create', 'update', 'rename', 'regenerate', 'archive')",
            name=op.f("ck_pipeline_versions_change_valid"),
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_pipeline_versions_version_positive")),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name=op.f("fk_pipeline_versions_pipeline_id_pipelines"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_pipeline_versions_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["author_user_id"],
            ["users.id"],
            name=op.f("fk_pipeline_versions_author_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["author_api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_pipeline_versions_author_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["agent_task_id"],
            ["agent_tasks.id"],
            name=op.f("fk_pipeline_versions_agent_task_id_agent_tasks"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_versions")),
        sa.UniqueConstraint(
            "pipeline_id", "version", name=op.f("uq_pipeline_versions_pipeline_id_version")
        ),
    )
    op.add_column("pipelines", sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("pipeline_runs", sa.Column("pipeline_version", sa.Integer(), nullable=True))
    op.add_column(
        "pipeline_runs",
        sa.Column("pipeline_source", sa.String(20), server_default="stored", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_pipeline_runs_pipeline_source_valid"),
        "pipeline_runs",
        "pipeline_source IN ('stored', 'repository')",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("ck_pipeline_runs_pipeline_source_valid"), "pipeline_runs", type_="check"
    )
    op.drop_column("pipeline_runs", "pipeline_source")
    op.drop_column("pipeline_runs", "pipeline_version")
    op.drop_column("pipelines", "archived_at")
    op.drop_table("pipeline_versions")
