#!/bin/sh
# First start of the compose PostgreSQL only (docker-entrypoint-initdb.d): one role per holder, so
# no service but this one knows the superuser password.
#   temporal         Temporal server + its schema job (CREATEDB: temporal, temporal_visibility)
#   forgeline        the application (owner of the forgeline database: migrations, API, workers)
#   forgeline_build  build hosts: CONNECT only here; table grants come with the migrations
set -eu
: "${TEMPORAL_DB_PASSWORD:?}" "${FORGELINE_DB_PASSWORD:?}" "${FORGELINE_BUILD_DB_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v temporal_pw="$TEMPORAL_DB_PASSWORD" \
  -v app_pw="$FORGELINE_DB_PASSWORD" \
  -v build_pw="$FORGELINE_BUILD_DB_PASSWORD" <<'SQL'
CREATE ROLE temporal LOGIN CREATEDB PASSWORD :'temporal_pw';
CREATE ROLE forgeline LOGIN PASSWORD :'app_pw';
CREATE ROLE forgeline_build LOGIN PASSWORD :'build_pw';
CREATE DATABASE forgeline OWNER forgeline;
REVOKE ALL ON DATABASE forgeline FROM PUBLIC;
GRANT CONNECT ON DATABASE forgeline TO forgeline_build;
SQL
