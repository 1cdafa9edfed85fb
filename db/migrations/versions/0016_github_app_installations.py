"""GitHub App installations as git provider connections: the installation ID (unique), the
repositories it covers, and no stored token (installation tokens are minted per use).

Revision ID: 0016_github_app_installations
Revises: 0015_pipeline_verification
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016_github_app_installations"
down_revision: str | None = "0015_pipeline_verification"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "git_provider_connections"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("installation_id", sa.BigInteger(), nullable=True))
    op.add_column(
        TABLE,
        sa.Column(
            "installation_repositories",
            postgresql.ARRAY(sa.String(length=300)),
            server_default=sa.text("'{}'::varchar[]"),
            nullable=False,
        ),
    )
    op.alter_column(TABLE, "access_token_encrypted", existing_type=sa.Text(), nullable=True)
    op.create_index(
        "uq_git_provider_connections_installation_id",
        TABLE,
        ["installation_id"],
        unique=True,
        postgresql_where=sa.text("installation_id IS NOT NULL"),
    )
    op.create_check_constraint(
        op.f("ck_git_provider_connections_has_credential"),
        TABLE,
        "installation_id IS NOT NULL OR access_token_encrypted IS NOT NULL",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_git_provider_connections_has_credential"), TABLE, type_="check")
    op.drop_index("uq_git_provider_connections_installation_id", table_name=TABLE)
    op.execute("DELETE FROM git_provider_connections WHERE access_token_encrypted IS NULL")
    op.alter_column(TABLE, "access_token_encrypted", existing_type=sa.Text(), nullable=False)
    op.drop_column(TABLE, "installation_repositories")
    op.drop_column(TABLE, "installation_id")
