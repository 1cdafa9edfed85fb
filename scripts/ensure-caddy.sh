#!/usr/bin/env bash
# Make the `caddy` reverse proxy binary available (Debian's caddy package) for the deployed apps'
# routes. Only installs: forgeline.stack and the tests start their own Caddy with their own config
# (the Debian package's systemd unit is not used). Idempotent. Used by `make run` and `make test`.
set -euo pipefail

log() { echo "ensure-caddy: $*" >&2; }

if command -v caddy >/dev/null 2>&1; then
  exit 0
fi
log "installing caddy"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# policy-rc.d 101: the package must not start its own service on :80 during installation.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
fi
apt-get install -y -qq --no-install-recommends caddy >/dev/null || status=$?
if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
if [ "${status:-0}" != 0 ] || ! command -v caddy >/dev/null 2>&1; then
  log "caddy could not be installed"
  exit 1
fi
log "caddy $(caddy version | head -n 1) installed"
