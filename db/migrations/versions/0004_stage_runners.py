"""Stage runners: `sandbox` (the isolated default) and `unsafe-local` (the unisolated development
runner, formerly `local`) beside `docker`.

Revision ID: 0004_stage_runners
Revises: 0003_build_slots
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004_stage_runners"
down_revision: str | None = "0003_build_slots"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "ck_stage_executions_runner_valid"


def upgrade() -> None:
    op.drop_constraint(op.f(CONSTRAINT), "stage_executions", type_="check")
    op.execute("UPDATE stage_executions SET runner = 'unsafe-local' WHERE runner = 'local'")
    op.create_check_constraint(
        op.f(CONSTRAINT), "stage_executions", "runner IN ('sandbox', 'docker', 'unsafe-local')"
    )


def downgrade() -> None:
    op.drop_constraint(op.f(CONSTRAINT), "stage_executions", type_="check")
    op.execute("UPDATE stage_executions SET runner = 'local' WHERE runner <> 'docker'")
    op.create_check_constraint(
        op.f(CONSTRAINT), "stage_executions", "runner IN ('docker', 'local')"
    )
