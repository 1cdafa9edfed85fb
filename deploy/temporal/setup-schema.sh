#!/bin/sh
# One-shot, idempotent: create the Temporal databases in the compose PostgreSQL and bring their
# schemas to the version this admin-tools image ships (temporal-sql-tool; the job the deprecated
# auto-setup image used to run inside the server). Safe on every `docker compose up`:
# `create` fails harmlessly on an existing database, `setup-schema -v 0.0` leaves a versioned
# schema alone and `update-schema` applies only the versions it lacks.
set -eu
: "${SQL_PASSWORD:?}" "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}"
SCHEMA_DIR=/etc/temporal/schema/postgresql/v12

sql_tool() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "${DB_PORT:-5432}" \
    -u "$POSTGRES_USER" "$@"
}

for pair in temporal:temporal temporal_visibility:visibility; do
  db="${pair%%:*}"
  dir="${pair#*:}"
  sql_tool --db "$db" create || echo "database $db exists"
  sql_tool --db "$db" setup-schema -v 0.0
  sql_tool --db "$db" update-schema -d "$SCHEMA_DIR/$dir/versioned"
done
echo "Temporal schemas are up to date"
