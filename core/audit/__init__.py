"""The audit trail: one audit_logs row per mutation, and the queries that list them."""
