#!/bin/sh
# One-shot, idempotent: the bucket, and one MinIO user per holder so that no application service
# holds the root credentials: forgeline-app (read/write) for the API and control worker,
# forgeline-build (get/put objects, no delete, no admin) for build hosts.
set -eu
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${MINIO_APP_SECRET_KEY:?}" \
  "${MINIO_BUILD_SECRET_KEY:?}" "${S3_BUCKET:?}"
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$S3_BUCKET"
sed "s/@BUCKET@/$S3_BUCKET/g" /setup/build-policy.json > /tmp/build-policy.json
mc admin policy create local forgeline-build /tmp/build-policy.json
mc admin user add local forgeline-app "$MINIO_APP_SECRET_KEY"
mc admin user add local forgeline-build "$MINIO_BUILD_SECRET_KEY"
mc admin policy attach local readwrite --user forgeline-app || echo "forgeline-app: attached"
mc admin policy attach local forgeline-build --user forgeline-build || echo "forgeline-build: attached"
