"""Build-slot queue in trigger order: waiting runs are promoted by when they were triggered
(`pipeline_runs.queued_at`), not by which workflow reached the semaphore first.

Runs triggered together (a burst of pushes, a webhook redelivered, the API called in a loop)
start their workflows concurrently, and the first workflow task to claim used to take the first
place in the queue. `build_slot_acquire` takes the run's ID as an optional fourth argument and
stamps a new claim with the run's trigger time (a claim without one, such as a re-claim, takes
the clock time it is made, under the organization's lock, so such claims keep their claim
order); promotion and grant delivery order by (queued_at, seq).

A free slot is still taken at once by whoever claims it while nobody waits: the order applies
to runs that wait.

Revision ID: 0021_build_slot_trigger_order
Revises: 0020_commit_status_turns
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021_build_slot_trigger_order"
down_revision: str | None = "0020_commit_status_turns"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PROMOTE = """
CREATE OR REPLACE FUNCTION build_slot_promote(p_key text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_free bigint;
BEGIN
    SELECT b.slot_limit - (
        SELECT count(*) FROM build_slot_claims c WHERE c.organization_key = p_key AND c.holding
    ) INTO v_free
    FROM build_slots b WHERE b.organization_key = p_key;
    IF v_free IS NULL OR v_free <= 0 THEN
        RETURN;
    END IF;
    UPDATE build_slot_claims c
    SET holding = true, grant_pending = true, granted_at = now()
    WHERE c.organization_key = p_key AND c.run_workflow_id IN (
        SELECT w.run_workflow_id FROM build_slot_claims w
        WHERE w.organization_key = p_key AND NOT w.holding
        ORDER BY w.{ORDER}
        LIMIT v_free
    );
END;
$$
"""

_PENDING = """
CREATE OR REPLACE FUNCTION build_slot_pending(p_key text, OUT runs text[], OUT seqs bigint[])
LANGUAGE sql AS $$
    SELECT coalesce(array_agg(c.run_workflow_id ORDER BY c.{ORDER}), '{}'),
           coalesce(array_agg(c.seq ORDER BY c.{ORDER}), '{}')
    FROM build_slot_claims c
    WHERE c.organization_key = p_key AND c.grant_pending
$$
"""

_ACQUIRE = """
CREATE FUNCTION build_slot_acquire(
    p_key text, p_run text, p_limit integer, p_run_id uuid DEFAULT NULL,
    OUT claim_seq bigint, OUT claim_holding boolean, OUT pending_runs text[],
    OUT pending_seqs bigint[]
)
LANGUAGE plpgsql AS $$
DECLARE
    v_holders bigint;
    v_waiting bigint;
BEGIN
    -- Takes the organization's lock; the limit of its current plan wins (an upgrade frees
    -- slots for the queue at once).
    INSERT INTO build_slots AS b (organization_key, slot_limit) VALUES (p_key, p_limit)
    ON CONFLICT (organization_key)
    DO UPDATE SET slot_limit = EXCLUDED.slot_limit, updated_at = now();
    PERFORM build_slot_promote(p_key);
    UPDATE build_slot_claims c SET grant_pending = false
    WHERE c.organization_key = p_key AND c.run_workflow_id = p_run
    RETURNING c.seq, c.holding INTO claim_seq, claim_holding;
    IF NOT FOUND THEN
        SELECT count(*) FILTER (WHERE c.holding), count(*) FILTER (WHERE NOT c.holding)
        INTO v_holders, v_waiting
        FROM build_slot_claims c WHERE c.organization_key = p_key;
        claim_holding := v_waiting = 0 AND v_holders < p_limit;
        INSERT INTO build_slot_claims AS c
            (organization_key, run_workflow_id, holding, granted_at, queued_at)
        VALUES (
            p_key, p_run, claim_holding, CASE WHEN claim_holding THEN now() END,
            coalesce((SELECT r.queued_at FROM pipeline_runs r WHERE r.id = p_run_id), clock_timestamp())
        )
        RETURNING c.seq INTO claim_seq;
    END IF;
    SELECT p.runs, p.seqs INTO pending_runs, pending_seqs FROM build_slot_pending(p_key) p;
END;
$$
"""

_ACQUIRE_0003 = """
CREATE FUNCTION build_slot_acquire(
    p_key text, p_run text, p_limit integer,
    OUT claim_seq bigint, OUT claim_holding boolean, OUT pending_runs text[],
    OUT pending_seqs bigint[]
)
LANGUAGE plpgsql AS $$
DECLARE
    v_holders bigint;
    v_waiting bigint;
BEGIN
    INSERT INTO build_slots AS b (organization_key, slot_limit) VALUES (p_key, p_limit)
    ON CONFLICT (organization_key)
    DO UPDATE SET slot_limit = EXCLUDED.slot_limit, updated_at = now();
    PERFORM build_slot_promote(p_key);
    UPDATE build_slot_claims c SET grant_pending = false
    WHERE c.organization_key = p_key AND c.run_workflow_id = p_run
    RETURNING c.seq, c.holding INTO claim_seq, claim_holding;
    IF NOT FOUND THEN
        SELECT count(*) FILTER (WHERE c.holding), count(*) FILTER (WHERE NOT c.holding)
        INTO v_holders, v_waiting
        FROM build_slot_claims c WHERE c.organization_key = p_key;
        claim_holding := v_waiting = 0 AND v_holders < p_limit;
        INSERT INTO build_slot_claims AS c (organization_key, run_workflow_id, holding, granted_at)
        VALUES (p_key, p_run, claim_holding, CASE WHEN claim_holding THEN now() END)
        RETURNING c.seq INTO claim_seq;
    END IF;
    SELECT p.runs, p.seqs INTO pending_runs, pending_seqs FROM build_slot_pending(p_key) p;
END;
$$
"""


def upgrade() -> None:
    op.execute(_PROMOTE.replace("{ORDER}", "queued_at, w.seq"))
    op.execute(_PENDING.replace("{ORDER}", "queued_at, c.seq"))
    op.execute("DROP FUNCTION build_slot_acquire(text,text,integer)")
    op.execute(_ACQUIRE)
    op.create_index(
        "ix_build_slot_claims_organization_key_holding_queued_at",
        "build_slot_claims",
        ["organization_key", "holding", "queued_at", "seq"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_build_slot_claims_organization_key_holding_queued_at",
        table_name="build_slot_claims",
    )
    op.execute("DROP FUNCTION build_slot_acquire(text,text,integer,uuid)")
    op.execute(_ACQUIRE_0003)
    op.execute(_PROMOTE.replace("{ORDER}", "seq"))
    op.execute(_PENDING.replace("{ORDER}", "seq"))
