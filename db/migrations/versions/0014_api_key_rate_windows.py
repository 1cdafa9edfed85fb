"""API key rate windows: each key's requests per minute, shared by every API process (the
per-process counter let N processes admit N times a key's limit).

Revision ID: 0014_api_key_rate_windows
Revises: 0013_notification_delivery
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_api_key_rate_windows"
down_revision: str | None = "0013_notification_delivery"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_key_rate_windows",
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_api_key_rate_windows_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("api_key_id", "window_start", name=op.f("pk_api_key_rate_windows")),
        # No WAL: a count is not worth a disk flush per request; a crash forgets one minute.
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    op.drop_table("api_key_rate_windows")
