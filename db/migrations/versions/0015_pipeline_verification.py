"""Pipeline verification: a generated pipeline proven by running it (`verified`, the green run,
or the failing stage with its diagnosis and evidence), recorded on the pipeline and on the
version it verified; runs may be triggered by a verification; a repair is a version change.

Revision ID: 0015_pipeline_verification
Revises: 0014_api_key_rate_windows
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015_pipeline_verification"
down_revision: str | None = "0014_api_key_rate_windows"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_TRIGGERS = "trigger IN ('manual', 'api', 'push', 'pull_request', 'schedule')"
NEW_TRIGGERS = "trigger IN ('manual', 'api', 'push', 'pull_request', 'schedule', 'verification')"
OLD_CHANGES = "change IN ('create', 'update', 'rename', 'regenerate', 'archive')"
NEW_CHANGES = "change IN ('create', 'update', 'rename', 'regenerate', 'archive', 'repair')"


def _replace_check(table: str, name: str, condition: str) -> None:
    op.drop_constraint(op.f(name), table, type_="check")
    op.create_check_constraint(op.f(name), table, condition)


def upgrade() -> None:
    _replace_check("pipeline_runs", "ck_pipeline_runs_trigger_valid", NEW_TRIGGERS)
    _replace_check("pipeline_versions", "ck_pipeline_versions_change_valid", NEW_CHANGES)
    op.add_column("pipelines", sa.Column("verified", sa.Boolean(), nullable=True))
    op.add_column("pipelines", sa.Column("verified_run_id", sa.Uuid(), nullable=True))
    op.add_column(
        "pipelines",
        sa.Column("verification", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.add_column(
        "pipeline_versions",
        sa.Column("verification", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("pipeline_versions", "verification")
    op.drop_column("pipelines", "verification")
    op.drop_column("pipelines", "verified_run_id")
    op.drop_column("pipelines", "verified")
    op.execute("DELETE FROM pipeline_versions WHERE change = 'repair'")
    op.execute("UPDATE pipeline_runs SET trigger = 'api' WHERE trigger = 'verification'")
    _replace_check("pipeline_versions", "ck_pipeline_versions_change_valid", OLD_CHANGES)
    _replace_check("pipeline_runs", "ck_pipeline_runs_trigger_valid", OLD_TRIGGERS)
