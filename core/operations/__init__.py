"""Operations: the gauges /metrics reads from PostgreSQL, the reconciliation of projections with
Temporal, and the reads operators use (workflow executions)."""
