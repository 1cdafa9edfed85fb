#!/bin/sh
# One-shot, idempotent: wait for the frontend, create the namespace (the server image, unlike
# auto-setup, creates none) and register the search attributes operators filter on.
set -eu
: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:?}" "${FORGELINE_SEARCH_ATTRIBUTES:?}"
attempt=0
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" | grep -q SERVING; do
  attempt=$((attempt + 1))
  [ "$attempt" -lt 90 ] || { echo "Temporal frontend never became healthy"; exit 1; }
  sleep 2
done
temporal operator namespace describe -n "$TEMPORAL_NAMESPACE" --address "$TEMPORAL_ADDRESS" \
  >/dev/null 2>&1 ||
  temporal operator namespace create -n "$TEMPORAL_NAMESPACE" --address "$TEMPORAL_ADDRESS" \
    --retention "${TEMPORAL_RETENTION:-720h}"
for name in $FORGELINE_SEARCH_ATTRIBUTES; do
  temporal operator search-attribute create --namespace "$TEMPORAL_NAMESPACE" \
    --address "$TEMPORAL_ADDRESS" --name "$name" --type Keyword ||
    echo "search attribute $name exists"
done
