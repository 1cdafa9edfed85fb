"""Sign in with GitHub and GitLab: each pending authorization request carries the SHA-256 of the
binding secret its starting browser holds in a cookie, so only that browser completes it.
Requests pending during the upgrade (each lives ten minutes) are dropped: they have no binding.

Revision ID: 0019_oauth_browser_binding
Revises: 0018_oauth_sign_in
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_oauth_browser_binding"
down_revision: str | None = "0018_oauth_sign_in"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM oauth_states")
    op.add_column("oauth_states", sa.Column("binding_hash", sa.String(length=64), nullable=False))


def downgrade() -> None:
    op.drop_column("oauth_states", "binding_hash")
